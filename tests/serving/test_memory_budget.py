"""Memory: cgroup v1/v2 limits from fake /proc and cgroup trees, meminfo, the default budget, MemoryBudget admission."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from ganserve.serving.memory import (
    MemoryBudget,
    container_limit,
    container_limit_bytes,
    default_budget_bytes,
    machine_memory_bytes,
)

MIB = 1024 * 1024
GIB = 1024 * MIB
V1_UNLIMITED = "9223372036854771712\n"


def fake_system(tmp_path: Path, cgroup: str, files: dict[str, str], meminfo_kb: int | None = 16 * 1024 * 1024
                ) -> tuple[Path, Path]:
    """A fake /proc (self/cgroup, meminfo) and cgroup root under tmp_path; files maps paths under the root to text."""
    proc, root = tmp_path / "proc", tmp_path / "cgroup"
    (proc / "self").mkdir(parents=True)
    root.mkdir()
    (proc / "self" / "cgroup").write_text(cgroup)
    if meminfo_kb is not None:
        (proc / "meminfo").write_text(f"MemTotal:       {meminfo_kb} kB\nMemFree:         1234 kB\n")
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return proc, root


def test_v2_limit_at_the_leaf(tmp_path: Path) -> None:
    proc, root = fake_system(tmp_path, "0::/kubepods/pod1/ctr\n", {"kubepods/pod1/ctr/memory.max": f"{4 * GIB}\n"})
    assert container_limit_bytes(proc, root) == 4 * GIB
    assert container_limit(proc, root) == (4 * GIB, f"cgroup v2 {root / 'kubepods/pod1/ctr/memory.max'}")


def test_v2_nested_groups_the_smallest_wins(tmp_path: Path) -> None:
    proc, root = fake_system(tmp_path, "0::/kubepods/pod1/ctr\n", {
        "kubepods/pod1/ctr/memory.max": "max\n",
        "kubepods/pod1/memory.max": f"{2 * GIB}\n",
        "kubepods/memory.max": f"{8 * GIB}\n",
    })
    assert container_limit(proc, root) == (2 * GIB, f"cgroup v2 {root / 'kubepods/pod1/memory.max'}")
    (root / "kubepods/pod1/ctr/memory.max").write_text(f"{6 * GIB}\n")  # a child may be set above its parent
    assert container_limit_bytes(proc, root) == 2 * GIB
    (root / "kubepods/pod1/ctr/memory.max").write_text(f"{GIB}\n")
    assert container_limit_bytes(proc, root) == GIB


def test_v2_the_root_of_a_namespaced_mount_counts(tmp_path: Path) -> None:
    """In a cgroup namespace /proc/self/cgroup says "0::/" and the container's own limit sits at the mount root."""
    proc, root = fake_system(tmp_path, "0::/\n", {"memory.max": f"{3 * GIB}\n"})
    assert container_limit_bytes(proc, root) == 3 * GIB


def test_v2_max_everywhere_is_no_limit(tmp_path: Path) -> None:
    proc, root = fake_system(tmp_path, "0::/a/b\n", {"a/b/memory.max": "max\n", "a/memory.max": "max\n",
                                                     "memory.max": "max\n"})
    assert container_limit_bytes(proc, root) is None


def test_v1_limit(tmp_path: Path) -> None:
    proc, root = fake_system(tmp_path, "5:devices:/docker/abc\n4:memory:/docker/abc\n1:name=systemd:/docker/abc\n",
                             {"memory/docker/abc/memory.limit_in_bytes": f"{512 * MIB}\n",
                              "memory/memory.limit_in_bytes": V1_UNLIMITED})
    assert container_limit(proc, root) == (512 * MIB,
                                           f"cgroup v1 {root / 'memory/docker/abc/memory.limit_in_bytes'}")


def test_v1_unlimited_is_no_limit(tmp_path: Path) -> None:
    proc, root = fake_system(tmp_path, "4:memory:/docker/abc\n",
                             {"memory/docker/abc/memory.limit_in_bytes": V1_UNLIMITED,
                              "memory/docker/memory.limit_in_bytes": V1_UNLIMITED,
                              "memory/memory.limit_in_bytes": V1_UNLIMITED})
    assert container_limit_bytes(proc, root) is None


def test_v1_without_namespace_falls_back_to_the_mount_root(tmp_path: Path) -> None:
    """Docker on v1 bind-mounts the container's group at the root: the host path in /proc/self/cgroup is absent."""
    proc, root = fake_system(tmp_path, "4:memory:/docker/abc\n", {"memory/memory.limit_in_bytes": f"{GIB}\n"})
    assert container_limit_bytes(proc, root) == GIB


def test_v1_controller_list(tmp_path: Path) -> None:
    proc, root = fake_system(tmp_path, "3:cpuacct:/x\n4:cpu,memory:/x\n",
                             {"memory/x/memory.limit_in_bytes": f"{768 * MIB}\n"})
    assert container_limit_bytes(proc, root) == 768 * MIB


def test_a_name_that_merely_contains_memory_is_not_the_controller(tmp_path: Path) -> None:
    proc, root = fake_system(tmp_path, "4:name=memory_stats:/x\n", {"memory/x/memory.limit_in_bytes": f"{GIB}\n"})
    assert container_limit_bytes(proc, root) is None


def test_hybrid_takes_the_smallest(tmp_path: Path) -> None:
    files = {"memory/x/memory.limit_in_bytes": f"{3 * GIB}\n", "y/memory.max": f"{2 * GIB}\n"}
    proc, root = fake_system(tmp_path, "4:memory:/x\n1:name=systemd:/x\n0::/y\n", files)
    assert container_limit(proc, root) == (2 * GIB, f"cgroup v2 {root / 'y/memory.max'}")
    (root / "y/memory.max").write_text(f"{5 * GIB}\n")
    assert container_limit(proc, root) == (3 * GIB, f"cgroup v1 {root / 'memory/x/memory.limit_in_bytes'}")


@pytest.mark.parametrize("content", ["", "\n", "garbage\n", "-1\n", "0\n", "12.5\n", "1 2\n", "\xff\xfe"])
def test_garbage_is_no_limit(tmp_path: Path, content: str) -> None:
    proc, root = fake_system(tmp_path, "0::/a\n4:memory:/a\n",
                             {"a/memory.max": content, "memory/a/memory.limit_in_bytes": content})
    assert container_limit_bytes(proc, root) is None


def test_garbage_at_one_level_leaves_the_others(tmp_path: Path) -> None:
    proc, root = fake_system(tmp_path, "0::/a/b\n", {"a/b/memory.max": "nonsense", "a/memory.max": f"{GIB}\n"})
    assert container_limit_bytes(proc, root) == GIB


@pytest.mark.parametrize("cgroup", ["", "garbage\n", "0::\n", "0::relative/path\n", "0::/../../etc\n",
                                    "4:memory\n", "::::\n"])
def test_odd_proc_self_cgroup_is_no_limit(tmp_path: Path, cgroup: str) -> None:
    proc, root = fake_system(tmp_path, cgroup, {"memory.max": f"{GIB}\n", "memory/memory.limit_in_bytes": "1\n"})
    limit = container_limit_bytes(proc, root)
    assert limit is None or limit == GIB  # an empty path may be read as the root; never a crash, never "1"


def test_unreadable_files_are_no_limit(tmp_path: Path) -> None:
    """A directory where the file should be raises IsADirectoryError on read: skipped like a permission error."""
    proc, root = fake_system(tmp_path, "0::/a\n", {"memory.max": f"{GIB}\n"})
    (root / "a" / "memory.max").mkdir(parents=True)
    assert container_limit_bytes(proc, root) == GIB


def test_missing_files_are_no_limit(tmp_path: Path) -> None:
    proc, root = fake_system(tmp_path, "0::/a/b\n4:memory:/a\n", {})
    assert container_limit_bytes(proc, root) is None
    assert container_limit_bytes(tmp_path / "no-proc", tmp_path / "no-root") is None


def test_meminfo(tmp_path: Path) -> None:
    proc, _ = fake_system(tmp_path, "", {}, meminfo_kb=24683772)
    assert machine_memory_bytes(proc) == 24683772 * 1024


def test_meminfo_missing_falls_back_to_sysconf(tmp_path: Path) -> None:
    assert machine_memory_bytes(tmp_path) == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def test_the_real_machine_answers_without_raising() -> None:
    assert machine_memory_bytes() > 0
    budget, said = default_budget_bytes()
    assert 0 < budget < machine_memory_bytes() and said.endswith(f"= {budget // MIB} MiB")


def test_default_budget_large_limit_less_ten_percent(tmp_path: Path) -> None:
    proc, root = fake_system(tmp_path, "0::/x\n", {"x/memory.max": f"{4 * GIB}\n"})
    budget, said = default_budget_bytes(proc, root)
    assert budget == 4 * GIB - (4 * GIB) // 10
    assert said == f"container limit 4096 MiB (cgroup v2 {root / 'x/memory.max'}) less 10% margin = 3686 MiB"


def test_default_budget_small_limit_less_256_mib(tmp_path: Path) -> None:
    proc, root = fake_system(tmp_path, "4:memory:/x\n", {"memory/x/memory.limit_in_bytes": f"{GIB}\n"})
    budget, said = default_budget_bytes(proc, root)
    assert budget == GIB - 256 * MIB
    assert said.endswith("less 256 MiB margin = 768 MiB")


def test_default_budget_never_under_half(tmp_path: Path) -> None:
    proc, root = fake_system(tmp_path, "0::/x\n", {"x/memory.max": f"{300 * MIB}\n"})
    source = f"container limit 300 MiB (cgroup v2 {root / 'x/memory.max'})"
    assert default_budget_bytes(proc, root) == (150 * MIB, f"{source} less 256 MiB margin, at least half = 150 MiB")


def test_default_budget_machine_when_smaller_or_no_limit(tmp_path: Path) -> None:
    proc, root = fake_system(tmp_path, "0::/x\n", {"x/memory.max": f"{64 * GIB}\n"}, meminfo_kb=8 * 1024 * 1024)
    budget, said = default_budget_bytes(proc, root)
    assert budget == 8 * GIB - (8 * GIB) // 10
    assert said == (f"machine memory 8192 MiB ({proc / 'meminfo'} MemTotal; container limit 65536 MiB is larger) "
                    f"less 10% margin = 7372 MiB")
    (root / "x/memory.max").write_text("max\n")
    said = default_budget_bytes(proc, root)[1]
    assert said == f"machine memory 8192 MiB ({proc / 'meminfo'} MemTotal) less 10% margin = 7372 MiB"


async def settle() -> None:
    """Let every ready task run (a few loop turns)."""
    for _ in range(5):
        await asyncio.sleep(0)


async def hold(budget: MemoryBudget, cost: int, name: str, order: list[str], release: asyncio.Event,
               deadline: float | None = None) -> None:
    """Admit cost, record the name, hold the bytes until release is set."""
    async with budget.admit(cost, deadline):
        order.append(name)
        await release.wait()


def test_admission_up_to_the_limit_then_wait_until_released() -> None:
    async def scenario() -> None:
        budget, order = MemoryBudget(100), []
        first, second = asyncio.Event(), asyncio.Event()
        a = asyncio.create_task(hold(budget, 60, "a", order, first))
        b = asyncio.create_task(hold(budget, 40, "b", order, second))
        c = asyncio.create_task(hold(budget, 30, "c", order, second))
        await settle()
        assert order == ["a", "b"] and budget.in_flight == 100 and budget.waiting == 1
        first.set()
        await a
        await settle()
        assert order == ["a", "b", "c"] and budget.in_flight == 70 and budget.waiting == 0
        second.set()
        await asyncio.gather(b, c)
        assert budget.in_flight == 0
    asyncio.run(scenario())


def test_fifo_a_big_head_is_not_overtaken_by_small_ones() -> None:
    async def scenario() -> None:
        budget, order = MemoryBudget(100), []
        events = {name: asyncio.Event() for name in "abcde"}
        tasks = {"a": asyncio.create_task(hold(budget, 50, "a", order, events["a"]))}
        await settle()
        tasks["b"] = asyncio.create_task(hold(budget, 90, "b", order, events["b"]))  # does not fit beside a
        await settle()
        for name in "cd":  # would fit beside a, but b is ahead of them
            tasks[name] = asyncio.create_task(hold(budget, 10, name, order, events[name]))
        await settle()
        assert order == ["a"] and budget.in_flight == 50 and budget.waiting == 3
        events["a"].set()
        await settle()
        assert order == ["a", "b", "c"] and budget.in_flight == 100  # b first, then c fits beside it; d waits
        events["c"].set()
        await settle()
        assert order == ["a", "b", "c", "d"] and budget.in_flight == 100
        for event in events.values():
            event.set()
        await asyncio.gather(*tasks.values())
        assert budget.in_flight == 0 and budget.waiting == 0
    asyncio.run(scenario())


def test_newcomers_queue_behind_waiters_even_when_they_fit() -> None:
    async def scenario() -> None:
        budget, order = MemoryBudget(100), []
        release = asyncio.Event()
        held = asyncio.create_task(hold(budget, 60, "held", order, release))
        await settle()
        big = asyncio.create_task(hold(budget, 80, "big", order, asyncio.Event()))
        await settle()
        small_release = asyncio.Event()
        small = asyncio.create_task(hold(budget, 1, "small", order, small_release))
        await settle()
        assert order == ["held"] and budget.waiting == 2
        release.set()
        await held
        await settle()
        assert order == ["held", "big", "small"] and budget.in_flight == 81
        big.cancel()
        small_release.set()
        await asyncio.gather(big, small, return_exceptions=True)
        assert budget.in_flight == 0
    asyncio.run(scenario())


def test_deadline_times_out_with_nothing_held() -> None:
    async def scenario() -> None:
        budget, order = MemoryBudget(100), []
        release = asyncio.Event()
        held = asyncio.create_task(hold(budget, 70, "held", order, release))
        await settle()
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            async with budget.admit(50, deadline=started + 0.05):
                order.append("late")
        assert time.monotonic() - started >= 0.04
        assert order == ["held"] and budget.in_flight == 70 and budget.waiting == 0
        with pytest.raises(TimeoutError):  # a deadline already past is refused even where the cost would fit
            async with budget.admit(10, deadline=time.monotonic() - 1):
                order.append("past")
        assert budget.in_flight == 70
        async with budget.admit(30, deadline=time.monotonic() + 5):  # a deadline not reached admits normally
            assert budget.in_flight == 100
        release.set()
        await held
        assert budget.in_flight == 0
    asyncio.run(scenario())


@pytest.mark.parametrize("leaves", ["deadline", "cancel"])
def test_a_head_that_leaves_the_queue_lets_the_next_waiters_in(leaves: str) -> None:
    """The head of the queue times out or is cancelled while waiting: nothing it held stays, those behind proceed."""
    async def scenario() -> None:
        budget, order = MemoryBudget(100), []
        release, after = asyncio.Event(), asyncio.Event()
        held = asyncio.create_task(hold(budget, 50, "held", order, release))
        await settle()
        deadline = time.monotonic() + 0.05 if leaves == "deadline" else None
        head = asyncio.create_task(hold(budget, 90, "head", order, after, deadline=deadline))
        await settle()
        behind = asyncio.create_task(hold(budget, 40, "behind", order, after))
        await settle()
        assert order == ["held"] and budget.in_flight == 50 and budget.waiting == 2
        if leaves == "cancel":
            head.cancel()
        with pytest.raises(TimeoutError if leaves == "deadline" else asyncio.CancelledError):
            await head
        await settle()
        assert order == ["held", "behind"] and budget.in_flight == 90 and budget.waiting == 0
        release.set()
        after.set()
        await asyncio.gather(held, behind)
        assert budget.in_flight == 0
    asyncio.run(scenario())


def test_cancel_just_after_being_admitted_gives_the_bytes_back() -> None:
    """The waiter is granted (bytes counted) and cancelled before it runs again: nothing may leak."""
    async def scenario() -> None:
        budget, order = MemoryBudget(100), []
        held = budget.admit(100)
        await held.__aenter__()
        waiter = asyncio.create_task(hold(budget, 100, "waiter", order, asyncio.Event()))
        await settle()
        assert budget.waiting == 1
        await held.__aexit__(None, None, None)  # grants the waiter (no suspension): it has not run yet
        assert budget.in_flight == 100 and budget.waiting == 0
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert order == [] and budget.in_flight == 0 and budget.waiting == 0
    asyncio.run(scenario())


def test_cost_over_the_limit_is_refused_at_once() -> None:
    async def scenario() -> None:
        budget = MemoryBudget(100)
        assert budget.fits(100) and budget.fits(0) and not budget.fits(101) and not budget.fits(-1)
        async with budget.admit(100):
            with pytest.raises(ValueError, match="never fit"):  # refused at once, not queued behind the holder
                async with budget.admit(101):
                    pass
            assert budget.waiting == 0 and budget.in_flight == 100
        with pytest.raises(ValueError):
            async with budget.admit(-5):
                pass
        assert budget.in_flight == 0
        with pytest.raises(ValueError):
            MemoryBudget(0)
    asyncio.run(scenario())


def test_an_exception_in_the_block_releases_the_bytes() -> None:
    async def scenario() -> None:
        budget = MemoryBudget(100)
        with pytest.raises(RuntimeError, match="model failed"):
            async with budget.admit(70):
                assert budget.in_flight == 70 and budget.limit == 100
                raise RuntimeError("model failed")
        assert budget.in_flight == 0
        release = asyncio.Event()
        task = asyncio.create_task(hold(budget, 60, "cancelled inside", [], release))
        await settle()
        assert budget.in_flight == 60
        task.cancel()  # cancelled while holding, inside the block
        with pytest.raises(asyncio.CancelledError):
            await task
        assert budget.in_flight == 0
    asyncio.run(scenario())
