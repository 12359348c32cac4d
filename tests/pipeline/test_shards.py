"""Sharded streams (SOUNDHIVE_SHARDS): on one Redis, on two independent servers (REDIS_URLS)
and on a real 3-master Redis Cluster on loopback, the pipeline's promises hold as on one Redis:
every chunk predicted once, the same events as a clean 1-Redis run (test_chaos.py's machinery),
through a killed worker, a cluster node's restart and a reshard of a slot range mid-run."""

import json
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import redis
import soundfile
from pipeline_helpers import RedisServer, Services, dog_scene, read_all, start_api, wait_for
from test_chaos import clean_events, make_sources, source_args

from shared import bus, clips, detections, reviews, status, streams
from shared.config import ConfigError, Settings
from shared.messages import Clip, Event, Prediction, SourceStatus
from shared.ports import free_port
from shared.topology import Topology
from shared.writes import Writes
from soundhive.redis_process import LoopbackCluster, RedisProcess

WAIT_S = 180
CLUSTER_SOURCE_SECONDS = 16.0  # each of the 32 sources' real-time audio: the reshard fits in it


def test_a_source_shard_is_stable_and_one_shard_keeps_todays_names():
    assert streams.shard_of("kitchen", 6) == 1  # the same in every process, forever
    assert {streams.shard_of(f"mix{i}.wav", 4) for i in range(6)} == {0, 1, 2, 3}
    assert streams.Shard().key(streams.PCM_STREAM) == "soundhive:pcm"
    assert streams.Shard(3, 4).key(streams.PCM_STREAM) == "soundhive:pcm:{s3}"
    key = streams.Shard(3, 4).key(streams.source_state_key("mic"))
    assert key == "soundhive:state:mic:{s3}"  # its state shares the shard's slot


@pytest.mark.parametrize(("env", "message"), [
    ({"SOUNDHIVE_SHARDS": "4", "SOUNDHIVE_SHARD_IDS": "1,4"},
     "SOUNDHIVE_SHARD_IDS: shard 4 does not exist (SOUNDHIVE_SHARDS=4: 0 to 3)"),
    ({"SOUNDHIVE_SHARDS": "4", "SOUNDHIVE_SHARD_IDS": "0,2,0"},
     "SOUNDHIVE_SHARD_IDS: shard 0 is listed twice (each shard once)"),
    ({"SOUNDHIVE_SHARDS": "0"}, "SOUNDHIVE_SHARDS: Input should be greater than or equal to 1"),
    ({"REDIS_URLS": "redis://a,redis://b", "SOUNDHIVE_REDIS_CLUSTER": "1"},
     "REDIS_URLS and SOUNDHIVE_REDIS_CLUSTER exclude each other"),
])
def test_bad_shard_settings_are_one_line(monkeypatch, env: dict[str, str], message: str):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as error:
        Settings()
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)


def test_an_unreachable_cluster_and_another_shard_count_are_refused(
        services: Services, redis_server: RedisServer):
    url = f"redis://127.0.0.1:{free_port()}"
    with pytest.raises(ConfigError, match=r"^SOUNDHIVE_REDIS_CLUSTER: no cluster node answers"):
        Topology.connect(Settings(redis_url=url, redis_cluster=True))
    Topology.connect(Settings(redis_url=redis_server.url, shards=4)).claim_shard_count()
    refusal = ("SOUNDHIVE_SHARDS: this pipeline's Redis was written with 4 shards, not 2: use "
               "4 (a new count needs new streams, docs/deploy.md)")
    worker = services.start("features", SOUNDHIVE_SHARDS="2")
    assert worker.wait(60) == 2
    assert services.log_text(worker).strip().endswith(f"error: {refusal}")
    assert "model" not in services.log_text(worker)  # refused before loading it, reading nothing
    port = free_port()
    services.start("api", SOUNDHIVE_SHARDS="2", SOUNDHIVE_API_PORT=str(port),
                   SOUNDHIVE_API_HOST="127.0.0.1")
    ready = wait_for(lambda: api_readiness(f"http://127.0.0.1:{port}"), WAIT_S, "the api")
    assert ready.status_code == 503 and refusal in ready.json()["problems"]


def api_readiness(url: str) -> httpx.Response | None:
    try:
        return httpx.get(f"{url}/readyz", timeout=30)
    except httpx.HTTPError:
        return None


def sharded(topology: Topology, stream: str, schema: type) -> list:
    """Every message still in `stream`, on every shard."""
    return [message for shard in topology.every
            for message in read_all(topology.client(shard), shard.key(stream), schema)]


def chunks_and_predictions(topology: Topology) -> tuple[set, list]:
    statuses = [SourceStatus.decode(raw) for raw in topology.home.hvals(streams.SOURCES_HASH)]
    chunks = {(s.source, seq) for s in statuses if s.state == "finished"
              for seq in range(s.seq + 1)}
    return chunks, [(p.source, p.seq) for p in sharded(topology, streams.PREDICTIONS_STREAM,
                                                      Prediction)]


def wait_until_done(topology: Topology, capture: subprocess.Popen) -> tuple[set, list]:
    assert capture.wait(WAIT_S) == 0
    wait_for(lambda: (lambda c, p: c and set(p) >= c)(*chunks_and_predictions(topology)),
             WAIT_S, "a prediction for every chunk")
    time.sleep(1)  # a duplicate, if any, would have time to appear
    return chunks_and_predictions(topology)


def ended_events(topology: Topology) -> list[tuple[str, str, float, float]]:
    return sorted((e.source, e.label, round(e.start, 2), round(e.end, 2))
                  for e in sharded(topology, streams.EVENTS_STREAM, Event) if e.kind == "end")


def assert_like_one_redis(topology: Topology, capture: subprocess.Popen, reference: list):
    chunks, predictions = wait_until_done(topology, capture)
    assert sorted(predictions) == sorted(chunks)  # every chunk once: none lost, none twice
    assert ended_events(topology) == reference
    sources = {source for source, _ in chunks}
    used = {streams.shard_of(source, topology.count) for source in sources}
    assert len(used) > 1  # the sources were spread over shards


@pytest.fixture
def second_redis(tmp_path: Path):
    server = RedisServer(tmp_path / "redis-2")
    server.start()
    yield server
    server.stop()


@pytest.mark.parametrize("servers", [1, 2])
def test_four_shards_on_one_or_two_servers_match_one_redis(
        services: Services, redis_server: RedisServer, second_redis: RedisServer,
        clips_dir: Path, tmp_path: Path, models_dir: Path, servers: int):
    paths = make_sources(clips_dir, tmp_path / "sources", 6)
    reference = clean_events(clips_dir, tmp_path, models_dir, paths)
    urls = [redis_server.url, second_redis.url][:servers]
    env = {"SOUNDHIVE_SHARDS": "4", "REDIS_URLS": ",".join(urls)}
    services.start("features", **env, SOUNDHIVE_SHARD_IDS="0,1")
    services.start("features", **env, SOUNDHIVE_SHARD_IDS="2,3")
    services.start("classifier", **env)
    capture = services.start("capture", "--fast", *source_args(paths), **env)
    topology = Topology.connect(Settings(redis_urls=urls, shards=4))
    assert_like_one_redis(topology, capture, reference)
    if servers == 2:  # shards 1 and 3 live on the second server, nothing of them on the first
        assert second_redis.client().exists(streams.Shard(1, 4).key(streams.EVENTS_STREAM))
        assert not redis_server.client().exists(streams.Shard(1, 4).key(streams.EVENTS_STREAM))


def readiness(url: str) -> tuple[int, str] | None:
    try:
        answer = httpx.get(url, timeout=10)
    except httpx.HTTPError:
        return None
    return answer.status_code, answer.text


def unready_because(api_readyz: str) -> list[str] | None:
    """The api's problems while it answers 503, else None."""
    answer = readiness(api_readyz)
    return json.loads(answer[1])["problems"] if answer and answer[0] == 503 else None


def test_readiness_names_the_shard_whose_redis_is_away_at_every_probe(
        services: Services, redis_server: RedisServer, second_redis: RedisServer):
    """A worker serving both shards of two servers and the api: while the second server is
    down, every probe says not ready because of shard 1 (the good turns of shard 0 do not make
    it flap), and both are ready again when it is back."""
    env = {"SOUNDHIVE_SHARDS": "2", "REDIS_URLS": f"{redis_server.url},{second_redis.url}"}
    port = free_port()
    services.start("classifier", SOUNDHIVE_METRICS_PORT=str(port), **env)
    worker, api = f"http://127.0.0.1:{port}/readyz", f"{start_api(services, **env)}/readyz"
    for url in (worker, api):
        wait_for(lambda url=url: (readiness(url) or (0,))[0] == 200, 60, f"{url} ready")
    second_redis.stop()
    wait_for(lambda: (readiness(worker) or (0,))[0] == 503, 60, "the worker to notice")
    probes = []
    for _ in range(20):
        probes.append(readiness(worker))
        time.sleep(0.2)
    assert probes == [(503, "shard 1 of 2: redis unreachable\n")] * 20
    status_code, text = readiness(api)
    assert status_code == 503 and json.loads(text)["problems"] == [
        "redis unreachable on shard 1"]
    second_redis.start()
    for url in (worker, api):
        wait_for(lambda url=url: (readiness(url) or (0,))[0] == 200, 60, f"{url} ready again")


class Cluster(LoopbackCluster):
    """The loopback cluster, resharded and inspected as the tests need."""

    def node_id(self, node: RedisProcess) -> str:
        return node.client().cluster("myid").decode()

    def owner(self, slot: int) -> RedisProcess:
        for start, end, (_, port, *_), *_ in self.nodes[0].client().cluster("slots"):
            if start <= slot <= end:
                return next(node for node in self.nodes if node.port == port)
        raise AssertionError(f"slot {slot} has no owner")

    def move_slots_up_to(self, slot: int, to: RedisProcess) -> None:
        """redis-cli --cluster reshard: the owner's slots from its first to `slot` go to `to`
        (their keys migrate: clients meet ASK and MOVED meanwhile)."""
        source = self.owner(slot)
        first = min(start for start, _, (_, port, *_), *_ in
                    source.client().cluster("slots") if port == source.port)
        subprocess.run(["redis-cli", "--cluster", "reshard", f"127.0.0.1:{source.port}",
                        "--cluster-from", self.node_id(source), "--cluster-to",
                        self.node_id(to), "--cluster-slots", str(slot - first + 1),
                        "--cluster-yes"], check=True, capture_output=True, timeout=120)

    def redirections(self) -> int:
        """The MOVED and ASK replies every node gave since it started (INFO errorstats)."""
        return sum(node.client().info("errorstats").get(f"errorstat_{reply}", {}).get("count", 0)
                   for node in self.nodes for reply in ("MOVED", "ASK"))


@pytest.fixture
def cluster(tmp_path: Path):
    running = Cluster(tmp_path / "cluster")
    running.start()
    try:
        yield running
    finally:
        running.stop()


def workers_reading(topology: Topology) -> bool:
    """Whether the workers (their models loaded) created each pipeline group on every shard."""
    try:
        return all(any(found["name"].decode() == group for found in
                       topology.client(shard).xinfo_groups(shard.key(stream)))
                   for shard in topology.every
                   for stream, group in streams.CONSUMER_GROUPS.items())
    except redis.ResponseError:  # a stream not created yet
        return False


def test_six_shards_on_a_cluster_survive_a_kill_a_node_restart_and_a_reshard(
        cluster: Cluster, clips_dir: Path, tmp_path: Path, models_dir: Path):
    """32 real-time sources (of CLUSTER_SOURCE_SECONDS: the suite's time stays bounded);
    the reshard happens while capture still sends, and the pipeline meets its MOVED or ASK."""
    paths = make_sources(clips_dir, tmp_path / "sources", 32, CLUSTER_SOURCE_SECONDS)
    reference = clean_events(clips_dir, tmp_path, models_dir, paths)
    services = Services(cluster.nodes[0], tmp_path, models_dir)  # its url: a seed node
    env = {"SOUNDHIVE_SHARDS": "6", "SOUNDHIVE_REDIS_CLUSTER": "1", "SOUNDHIVE_BATCH_SIZE": "4",
           "SOUNDHIVE_CLAIM_IDLE_S": "2"}
    try:
        features = [services.start("features", **env) for _ in range(2)]
        classifiers = [services.start("classifier", **env) for _ in range(2)]
        topology = Topology.connect(Settings(redis_url=cluster.url, redis_cluster=True,
                                             shards=6))
        wait_for(lambda: workers_reading(topology), WAIT_S, "the workers reading")
        capture = services.start("capture", *source_args(paths), **env)
        wait_for(lambda: len(chunks_and_predictions(topology)[1]) >= 8, WAIT_S,
                 "first predictions")
        moved_slot = redis.crc.key_slot(b"{s0}")  # 175th of its owner (even split): quick to move
        other = next(n for n in cluster.nodes if n is not cluster.owner(moved_slot))
        redirected = cluster.redirections()
        cluster.move_slots_up_to(moved_slot, other)
        assert capture.poll() is None  # the reshard came mid-traffic, not after it
        wait_for(lambda: cluster.redirections() > redirected, 30,
                 "the pipeline to meet a MOVED or an ASK")
        features[0].send_signal(signal.SIGKILL)
        classifiers[0].send_signal(signal.SIGKILL)
        shard_4_slot = redis.crc.key_slot(b"{s4}")
        restarted = cluster.owner(shard_4_slot)
        restarted.stop()
        time.sleep(1)
        restarted.start()
        wait_for(cluster.ok, 60, "the cluster to be ok again")
        assert cluster.owner(shard_4_slot) is restarted
        assert_like_one_redis(topology, capture, reference)
        assert cluster.owner(moved_slot) is other
        assert all(p.poll() is None for p in (features[1], classifiers[1]))
    finally:
        services.stop_all()


def test_the_api_is_unready_naming_the_shards_of_a_stopped_cluster_node(
        cluster: Cluster, tmp_path: Path, models_dir: Path):
    env = {"SOUNDHIVE_SHARDS": "6", "SOUNDHIVE_REDIS_CLUSTER": "1"}
    services = Services(cluster.nodes[0], tmp_path, models_dir)
    try:
        url = f"{start_api(services, **env)}/readyz"
        stopped = cluster.owner(redis.crc.key_slot(b"{s3}"))
        on_it = [shard.index for shard in streams.shards(6)
                 if cluster.owner(redis.crc.key_slot(f"{{s{shard.index}}}".encode()))
                 is stopped]
        stopped.stop()
        problems = wait_for(lambda: unready_because(url), 60, "the api unready")
        names = ", ".join(map(str, on_it))
        assert f"redis unreachable on shard{'s' * (len(on_it) > 1)} {names}" in problems
        stopped.start()
        wait_for(lambda: (readiness(url) or (0,))[0] == 200, 60, "ready again")
    finally:
        services.stop_all()


def test_the_api_reads_every_shard_as_one(services: Services, redis_server: RedisServer):
    topology = Topology.connect(Settings(redis_url=redis_server.url, shards=4))
    written = []
    for n in range(40):  # ten sources over the shards, equal start times among them
        source = f"mic{n % 10}"
        written.append(Event(f"{source}/Dog/{n}", source, "Dog", "start", 0.5, float(n), None,
                             1000.0 + n // 3, None, "yamnet"))
    for event in written:
        shard = streams.shard_for(event.source, 4)
        writes = Writes()
        detections.write(writes, event, shard)
        with topology.client(shard).pipeline() as pipe:
            writes.queue(pipe)
            pipe.execute()
    for source in {event.source for event in written}:
        shard = streams.shard_for(source, 4)
        topology.home.hset(streams.SOURCES_HASH, source, SourceStatus(
            source, "running", "", 0.1, 5, time.time()).encode())
        writes = Writes()
        status.record(writes, [Prediction(source, "s", 5, 0.0, 0.0, 0.1, "audioset",
                                          [("Dog", 0.8)], time.time())], shard)
        with topology.client(shard).pipeline() as pipe:
            writes.queue(pipe)
            pipe.execute()
    for shard in topology.every:
        topology.client(shard).xgroup_create(shard.key(streams.PCM_STREAM),
                                             streams.FEATURES_GROUP, mkstream=True)
    url = start_api(services, SOUNDHIVE_SHARDS="4", SOUNDHIVE_API_READ_AUTH="false")
    listed = httpx.get(f"{url}/sources", timeout=30).json()["sources"]
    assert [(s["source"], s["labels"][0]["label"], s["ongoing"]) for s in listed] == [
        (f"mic{n}", "Dog", 4) for n in range(10)]
    detail = httpx.get(f"{url}/sources/mic7/detail", timeout=30).json()
    assert len(detail["levels"]) == 1 and detail["events"][0]["id"] == "mic7/Dog/37"
    exported = httpx.get(f"{url}/metrics", timeout=30).text
    for shard in streams.shards(4):
        assert f'stream="{shard.key(streams.PCM_STREAM)}"' in exported
    seen, cursor = [], None
    while True:
        page = httpx.get(f"{url}/events", params={"limit": 7, **(
            {"cursor": cursor} if cursor else {})}, timeout=30).json()
        seen += [item["id"] for item in page["events"]]
        cursor = page["next"]
        if cursor is None:
            break
    newest_first = sorted(written, key=lambda e: (e.start_time, e.id), reverse=True)
    assert seen == [e.id for e in newest_first]  # merged, none skipped nor repeated
    mic3 = httpx.get(f"{url}/events", params={"source": "mic3"}, timeout=30).json()["events"]
    assert {item["id"] for item in mic3} == {e.id for e in written if e.source == "mic3"}



def sse_events(url: str, count: int, last_event_id: str | None = None) -> list[tuple[str, str]]:
    """The (SSE id, event id) of the first `count` events of the live stream."""
    found, sse_id = [], None
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    with httpx.stream("GET", f"{url}/events/stream", headers=headers, timeout=WAIT_S) as answer:
        for line in answer.iter_lines():
            if line.startswith("id: "):
                sse_id = line[4:]
            elif line.startswith("data: "):
                found.append((sse_id, json.loads(line[6:])["id"]))
                if len(found) == count:
                    return found
    return found


def test_the_live_stream_reads_every_shard_and_resumes_exactly(services: Services,
                                                               redis_server: RedisServer):
    topology = Topology.connect(Settings(redis_url=redis_server.url, shards=4))
    url = start_api(services, SOUNDHIVE_SHARDS="4", SOUNDHIVE_API_READ_AUTH="false")
    written = []

    def publish(first: int, count: int) -> None:
        for n in range(first, first + count):
            source = f"mic{n % 10}"
            event = Event(f"{source}/Dog/{n}", source, "Dog", "start", 0.5, float(n), None,
                          1000.0 + n, None, "yamnet")
            shard = streams.shard_for(source, 4)
            bus.publish(topology.client(shard), shard.key(streams.EVENTS_STREAM), event)
            written.append(event.id)

    with ThreadPoolExecutor(1) as pool:
        live = pool.submit(sse_events, url, 60)
        time.sleep(1)  # connected: what follows comes live
        publish(0, 60)
        received = live.result(WAIT_S)
    assert sorted(event for _, event in received) == sorted(written)
    assert all(len(sse_id.split(",")) == 4 for sse_id, _ in received)
    publish(60, 30)  # while nobody listens
    resumed = sse_events(url, 50, last_event_id=received[39][0])
    missed = set(written) - {event for _, event in received[:40]}
    assert sorted(event for _, event in resumed) == sorted(missed)  # none lost nor twice
    assert httpx.get(f"{url}/events/stream", headers={"Last-Event-ID": "1-0"},
                     timeout=30).status_code == 400  # one shard's id: not this stream's


@pytest.mark.parametrize("where", ["one Redis", "a cluster"])
def test_the_recorder_records_a_sharded_source_and_the_api_serves_its_clip(
        where: str, request: pytest.FixtureRequest, clips_dir: Path, tmp_path: Path,
        models_dir: Path):
    """SOUNDHIVE_SHARDS=4: the dog of a source outside shard 0 gets its clip (its rings and
    job in its shard, its record in clips.records_shard: on a cluster, other slots)."""
    source, shards = "garden", 4
    shard, records = streams.shard_for(source, shards), clips.records_shard(shards)
    assert shard != records
    server = request.getfixturevalue("redis_server") if where == "one Redis" \
        else request.getfixturevalue("cluster").nodes[0]
    env = {"SOUNDHIVE_SHARDS": str(shards),
           **({"SOUNDHIVE_REDIS_CLUSTER": "1"} if where == "a cluster" else {})}
    topology = Topology.connect(Settings(redis_url=server.url, shards=shards,
                                         redis_cluster=where == "a cluster"))
    client = topology.client(shard)
    services = Services(server, tmp_path, models_dir)
    folder = tmp_path / "clips"
    path, _ = dog_scene(clips_dir, tmp_path)
    try:
        services.start("recorder", SOUNDHIVE_CLIPS_DIR=str(folder), **env)
        services.start("features", **env)
        services.start("classifier", **env)
        wait_for(lambda: streams.RECORDER_GROUP in {g.group for g in bus.group_backlogs(
            client, [shard.key(streams.PCM_STREAM)])}, 60,
            "the recorder's group on the source's shard of the audio stream")
        services.start("capture", "--fast", "--source", f"{source}=file:{path}", **env)

        def settled() -> dict[str, Clip] | None:
            ends = [e for e in read_all(client, shard.key(streams.EVENTS_STREAM), Event)
                    if e.kind == "end"]
            found = clips.read_many(topology.client(records), [e.id for e in ends], records)
            return found if ends and len(found) == len(ends) else None

        event_id, clip = next(iter(wait_for(settled, WAIT_S, "the dog's clip").items()))
        assert clip.status == "ready" and clip.source == source, clip
        audio, rate = soundfile.read(folder / clip.audio, dtype="float32")
        assert rate == 16000 and len(audio) / rate >= 4  # both rolls at least
        assert client.exists(shard.key(streams.ring_key(source)))
        token = "shards-token-5c1d"
        url = start_api(services, SOUNDHIVE_CLIPS_DIR=str(folder), SOUNDHIVE_API_TOKEN=token,
                        **env)
        shown = next(e for e in httpx.get(f"{url}/events").json()["events"]
                     if e["id"] == event_id)
        assert shown["clip_status"] == "ready"
        served = httpx.get(f"{url}{shown['clip']}")
        assert served.status_code == 200 and served.content == (folder / clip.audio).read_bytes()
        review = httpx.post(f"{url}/events/{event_id.replace('/', '%2F')}/review",
                            json={"verdict": "correct"},
                            headers={"Authorization": f"Bearer {token}"})
        assert review.status_code == 200, review.text  # the event found in its shard
        assert next(e for e in httpx.get(f"{url}/events").json()["events"]
                    if e["id"] == event_id)["review"] == "correct"
    finally:
        services.stop_all()


def test_reviewed_clips_are_found_on_a_cluster(cluster: Cluster, tmp_path: Path):
    """`soundhive embed --from-reviews`'s record finding (the embedding itself: tests/training):
    seeded by a node that holds neither the reviews nor the clip records, with no shard count
    given, it reads both through the cluster."""
    shards = 4
    Topology.connect(Settings(redis_url=cluster.url, redis_cluster=True, shards=shards)
                     ).claim_shard_count()
    records = clips.records_shard(shards)
    holders = {cluster.owner(redis.crc.key_slot(key.encode())) for key in (
        records.key(streams.CLIPS_HASH), streams.REVIEWS_HASH)}
    seed = next(node for node in cluster.nodes if node not in holders)
    topology = Topology.connect(Settings(redis_url=seed.url, redis_cluster=True))
    folder = tmp_path / "clips"
    folder.mkdir()
    for n, verdict in enumerate(("correct", "wrong", "correct")):
        event = Event(f"yard/Bark/{n}", "yard", "Bark", "end", 0.9, 0.0, 5.0, 0.0, 5.0, "yamnet")
        (folder / f"{n}.ogg").write_bytes(b"kept")
        clips.record(topology.client(records), Clip(event.id, "yard", "Bark", "ready", "",
                                                    f"{n}.ogg", f"{n}.png", 0.0, 5.0, 4, 0.0),
                     records)
        reviews.write(topology.home, event, verdict, float(n))
    (folder / "2.ogg").unlink()  # expired meanwhile
    kept = reviews.kept_clips(topology, folder)
    assert sorted((review.id, review.verdict, path.name) for review, path in kept) == [
        ("yard/Bark/0", "correct", "0.ogg"), ("yard/Bark/1", "wrong", "1.ogg")]
