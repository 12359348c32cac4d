"""An RTSP server of one endless MP3 for bench/capture_cost.py, on GStreamer's RTSP server.

    /usr/bin/python3 bench/rtsp_radio.py FILE.mp3 PORT

Serves rtsp://127.0.0.1:PORT/radio: the file looped, MP3 over RTP (payload type 14), paced in
real time by the server, one pipeline shared by every client (so the server's cost does not
grow with the clients). Runs under the system Python, where PyGObject is: it needs
python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good (Debian/Ubuntu). Prints
"ready" once it listens; SIGTERM ends it.
"""

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

MOUNT = "/radio"


def main() -> None:
    path, port = sys.argv[1], sys.argv[2]
    Gst.init(None)
    server = GstRtspServer.RTSPServer.new()
    server.set_address("127.0.0.1")
    server.set_service(port)
    factory = GstRtspServer.RTSPMediaFactory.new()
    factory.set_launch(f"( multifilesrc location={path} loop=true ! mpegaudioparse "
                       "! rtpmpapay name=pay0 pt=14 )")
    factory.set_shared(True)
    server.get_mount_points().add_factory(MOUNT, factory)
    if not server.attach(None):
        sys.exit(f"error: cannot listen on 127.0.0.1:{port}")
    print("ready", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
