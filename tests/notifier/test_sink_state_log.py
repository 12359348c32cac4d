"""Every change of a sink's state is in the notifier's log, with the reason, and its metrics
tell a disabled sink from a down one."""

import re
import urllib.request

from notifier_helpers import WebhookReceiver
from pipeline_helpers import RedisServer, Services, wait_for
from test_notifier_service import WAIT_S, publish, sink_env, start_notifier


def test_a_sink_going_down_and_back_is_logged(services: Services, redis_server: RedisServer,
                                              webhook: WebhookReceiver):
    client = redis_server.client()
    notifier = start_notifier(services, client, {"devicehive", "webhook"},
                              **sink_env(hook=webhook))

    def logged(pattern: str, times: int = 1) -> bool:
        return len(re.findall(pattern, services.log_text(notifier))) == times

    publish(client, "porch", "Bark", "start")
    wait_for(lambda: len(webhook.received) == 1
             and logged(r"webhook sink: connected \(was connecting\)"), WAIT_S, "the first event")
    webhook.stop()
    publish(client, "porch", "Bark", "end")
    wait_for(lambda: logged(r"webhook sink: connecting: .+ \(was connected\)"), WAIT_S,
             "the webhook sink's outage in the log, with its error")
    webhook.start()
    wait_for(lambda: logged(r"webhook sink: connected \(was connecting\)", times=2), WAIT_S,
             "the webhook sink's recovery in the log")
    wait_for(lambda: logged(r"devicehive sink: disabled \(was connecting\)"), WAIT_S,
             "the DeviceHive sink (no URL) disabled")
    assert logged(r"devicehive sink:")  # once, however often its loop turns
    port = re.search(r"metrics on :(\d+)", services.log_text(notifier)).group(1)
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    assert 'soundhive_sink_enabled{sink="devicehive"} 0.0' in text
    assert 'soundhive_sink_enabled{sink="webhook"} 1.0' in text
    assert 'soundhive_sink_connected{sink="webhook"} 1.0' in text
