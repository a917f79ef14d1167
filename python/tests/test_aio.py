"""shmif.aio: awaiting frames, timeouts, cancellation, several waiters."""

import asyncio
import time

import pytest

import shmif
import shmif.aio
from conftest import frame


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def test_await_recv_gets_a_frame_sent_later(bus):
    async def main():
        with shmif.Interface(bus) as a:
            async with shmif.aio.Interface(bus) as b:
                f = frame(b.mac, a.mac, b"async")
                loop = asyncio.get_running_loop()
                loop.call_later(0.1, a.send, f)
                t = loop.time()
                got = await b.recv(timeout=5)
                return got == f, loop.time() - t

    ok, waited = run(main())
    assert ok and 0.05 <= waited < 4


def test_recv_timeout(bus):
    async def main():
        async with shmif.aio.Interface(bus) as b:
            t = time.monotonic()
            got = await b.recv(timeout=0.2)
            return got, time.monotonic() - t

    got, waited = run(main())
    assert got is None and 0.2 <= waited < 2


def test_the_loop_runs_while_waiting(bus):
    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        async with shmif.aio.Interface(bus) as b:
            t = asyncio.ensure_future(ticker())
            await b.recv(timeout=0.3)
            t.cancel()
        return ticks

    assert run(main()) >= 10


def test_cancelled_recv_loses_no_frame_and_leaves_no_reader(bus):
    async def main():
        loop = asyncio.get_running_loop()
        with shmif.Interface(bus) as a:
            async with shmif.aio.Interface(bus) as b:
                task = asyncio.ensure_future(b.recv())
                await asyncio.sleep(0.1)
                assert not task.done()
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                # No reader is left registered for the descriptor.
                assert loop.remove_reader(b.sync.fileno()) is False
                f = frame(b.mac, a.mac, b"after cancel")
                a.send(f)
                # asyncio.wait_for cancelling on timeout is the same case.
                assert await asyncio.wait_for(b.recv(), 5) == f
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(b.recv(), 0.1)
                g = frame(b.mac, a.mac, b"next")
                a.send(g)
                return await b.recv(timeout=5) == g

    assert run(main())


def test_two_tasks_wait_on_one_interface(bus):
    async def main():
        with shmif.Interface(bus) as a:
            async with shmif.aio.Interface(bus) as b:
                t1 = asyncio.ensure_future(b.recv(timeout=5))
                t2 = asyncio.ensure_future(b.recv(timeout=5))
                await asyncio.sleep(0.1)
                frames = [frame(b.mac, a.mac, bytes([i])) for i in range(2)]
                a.send_batch(frames)
                got = await asyncio.gather(t1, t2)
                return sorted(got) == sorted(frames)

    assert run(main())


def test_async_for_ends_on_close(bus):
    async def main():
        with shmif.Interface(bus) as a:
            b = shmif.aio.Interface(bus)
            frames = [frame(b.mac, a.mac, bytes([i])) for i in range(3)]
            loop = asyncio.get_running_loop()
            loop.call_later(0.05, a.send_batch, frames)
            loop.call_later(0.3, b.close)
            got = [f async for f in b]
            return got == frames, b.closed

    assert run(main()) == (True, True)


def test_close_wakes_a_waiting_task(bus):
    async def main():
        b = shmif.aio.Interface(bus)
        task = asyncio.ensure_future(b.recv())
        await asyncio.sleep(0.05)
        b.close()
        with pytest.raises(shmif.InterfaceClosedError):
            await task
        return True

    assert run(main())


def test_recv_frame_and_wrap(bus):
    async def main():
        with shmif.Interface(bus) as a, shmif.Interface(bus) as raw:
            b = shmif.aio.Interface.wrap(raw)
            f = frame(b.mac, a.mac, b"meta")
            a.send(f)
            got = await b.recv_frame(timeout=5)
            return got.data == f and got.sender == a.sender_id

    assert run(main())


def test_recv_batch(bus):
    async def main():
        with shmif.Interface(bus) as a:
            async with shmif.aio.Interface(bus) as b:
                frames = [frame(b.mac, a.mac, bytes([i])) for i in range(5)]
                asyncio.get_running_loop().call_later(0.05, a.send_batch, frames)
                first = await b.recv_batch(3, timeout=5)
                rest = await b.recv_batch(10, timeout=5)
                none = await b.recv_batch(timeout=0.05)
                return first == frames[:3] and rest == frames[3:] and none == []

    assert run(main())
