"""FeedService (the async layer) in a real trio loop over a real feeds.db: watch semantics and
wake-ups by appends, by replication imports and by threads that changed Feeds directly."""

import hashlib

import trio
import trio.testing

from kacheryfs.feeds.mutables import Mutables
from kacheryfs.feeds.service import FeedService, Watch
from kacheryfs.feeds.store import Feeds

SF = hashlib.sha1(b"sf1").hexdigest()
SF2 = hashlib.sha1(b"sf2").hexdigest()


def service(d):
    d.mkdir(parents=True, exist_ok=True)
    return FeedService(Feeds(d / "feeds.db", Mutables(d / "mutables.db")))


async def watch_registered(svc):
    """Until a watch is registered (its wake-up event is in place before its first look)."""
    with trio.fail_after(10):
        while not svc._waiters:
            await trio.sleep(0.001)
    await trio.testing.wait_all_tasks_blocked()


def test_watch_semantics(tmp_path):
    svc = service(tmp_path / "a")

    async def main():
        fid = await svc.create_feed()
        await svc.append(fid, SF, [{"a": 0}, {"a": 1}])
        w = {"x": Watch(fid, SF, 0), "y": Watch(fid, SF2, 0)}
        assert await svc.watch(w, 5000) == {"x": [{"a": 0}, {"a": 1}]}            # at once, only keys with messages
        assert await svc.watch(w, 0, max_num=1) == {"x": [{"a": 0}]}
        w = {"x": Watch(fid, SF, 2), "y": Watch(fid, SF2, 0)}
        assert await svc.watch(w, 0) == {}
        start = trio.current_time()
        assert await svc.watch(w, 300) == {"x": [], "y": []}                      # timeout: every key
        assert 0.3 <= trio.current_time() - start < 0.6
        # a wake-up for a position below the watched one does not end the wait early
        w2 = {"x": Watch(fid, SF, 3)}
        async with trio.open_nursery() as n:
            async def append_twice():
                await trio.sleep(0.05)
                await svc.append(fid, SF, [{"a": 2}])
                await trio.sleep(0.2)
                await svc.append(fid, SF, [{"a": 3}])
            n.start_soon(append_twice)
            start = trio.current_time()
            assert await svc.watch(w2, 5000) == {"x": [{"a": 3}]}
            assert 0.25 <= trio.current_time() - start < 1.0
        assert svc._waiters == {}                                                  # nothing left registered
    trio.run(main)


def test_import_and_thread_changes_wake_watches(tmp_path):
    owner, reader = service(tmp_path / "owner"), service(tmp_path / "reader")

    async def main():
        fid = await owner.create_feed()
        await owner.append(fid, SF, [{"i": 0}, {"i": 1}])
        envelopes = await owner.get_messages(fid, SF, signed=True)
        latencies = []

        async def watch_then_measure(position, expect):
            start = trio.current_time()
            got = await reader.watch({"w": Watch(fid, SF, position)}, 10000)
            latencies.append(trio.current_time() - start)
            assert got == {"w": expect}

        async with trio.open_nursery() as n:
            n.start_soon(watch_then_measure, 0, [{"i": 0}, {"i": 1}])
            await watch_registered(reader)
            assert await reader.import_messages(fid, SF, envelopes) == 2
        assert latencies[-1] < 0.1                     # woken within 100 ms of the import

        await owner.append(fid, SF, [{"i": 2}])
        third = await owner.get_messages(fid, SF, position=2, signed=True)
        async with trio.open_nursery() as n:
            n.start_soon(watch_then_measure, 2, [{"i": 2}])
            await watch_registered(reader)

            def import_in_thread():     # replication code working in its own thread
                reader.feeds.import_messages(fid, SF, third)
                reader.notify_from_thread(fid, SF)
            await trio.to_thread.run_sync(import_in_thread)
        assert latencies[-1] < 0.1
    trio.run(main)
