"""The system shared-memory extension: registered regions of POSIX shared-memory objects on the server's host.

A client on the same host creates an object with shm_open (``/dev/shm/<key>`` on Linux; tritonclient's
``tritonclient.utils.shared_memory`` does it), registers a region of it by name, then names that region instead of
sending a tensor's bytes: an input is read from it, an output is written into it. Each region is one mmap of the
object, opened once at registration.

The object belongs to the client, which may shrink it at any time; touching a mapped page past the end of the file
raises SIGBUS and would kill the server. So every access checks the object's size with os.fstat first (about 1 us)
and refuses, with the region's name and both sizes, an access that would reach past it. Inputs are copied out of the
region right after that check, so ONNX Runtime never reads shared pages later; outputs are copied in with one memcpy.
What no check can catch is a client shrinking the object during that one copy (microseconds): the same holds for any
server that maps client memory.
"""

from __future__ import annotations

import math
import mmap
import os
import stat
from dataclasses import dataclass
from typing import NamedTuple

import grpc
import numpy as np

from ganserve.serving import status

SHM_DIR = "/dev/shm"  # where Linux keeps shm_open objects (glibc maps "/name" to /dev/shm/name)
NAME_MAX = 255
MODES = ("auto", "on", "off")
LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1", "[::1]"}


def already_exists(message: str) -> status.ServingError:
    return status.ServingError(grpc.StatusCode.ALREADY_EXISTS, message, http=409)


def unimplemented(message: str) -> status.ServingError:
    return status.ServingError(grpc.StatusCode.UNIMPLEMENTED, message)


CUDA_REFUSAL = ("CUDA shared memory is not served: this server runs on CPUs; use system shared memory "
                "(register_system_shared_memory) or send the tensors in the request")


def enabled_for(mode: str, host: str) -> tuple[bool, str]:
    """Whether --shared-memory MODE serves regions on a server bound to `host`, and a line saying why."""
    if mode == "on":
        return True, "--shared-memory on"
    if mode == "off":
        return False, "the server was started with --shared-memory off"
    loopback = host in LOOPBACK_HOSTS or host.startswith("127.")
    if loopback:
        return True, f"--shared-memory auto on the loopback address {host}"
    return False, (f"the server listens on {host}, not a loopback address, so clients may be on other hosts; "
                   "start it with --shared-memory on to allow regions anyway")


class Slot(NamedTuple):
    """Where one tensor lives: a registered region's name, the offset inside the region and the byte count."""

    region: str
    offset: int
    byte_size: int


@dataclass
class Region:
    name: str
    key: str
    offset: int  # inside the object
    byte_size: int
    fd: int
    map: mmap.mmap
    start: int  # where the region starts inside the map (the map begins at a page boundary)

    def close(self) -> None:
        """Unmap and close. A view still in use (a request in flight) keeps the mapping until it is dropped."""
        try:
            self.map.close()
        except BufferError:  # exported buffers: the mmap object unmaps itself once the last view is gone
            pass
        os.close(self.fd)


def object_path(key: str) -> str:
    """The file of a shm_open key, refusing keys shm_open would refuse (and any that would leave SHM_DIR)."""
    name = key.lstrip("/")
    if not name or name in (".", "..") or "/" in name or "\0" in name or len(name) > NAME_MAX:
        raise status.invalid(f"shared-memory key {key!r} is not a POSIX shared-memory name: one '/' followed by "
                             f"1..{NAME_MAX} characters without '/', e.g. '/my_region'")
    return os.path.join(SHM_DIR, name)


class SharedMemory:
    """The registered system shared-memory regions of one server, by name. Used from the event loop only."""

    def __init__(self, enabled: bool = True, why: str = "") -> None:
        self.enabled = enabled
        self.why = why
        self.regions: dict[str, Region] = {}

    def _check_enabled(self) -> None:
        if not self.enabled:
            raise status.precondition(f"system shared memory is off: {self.why}")

    # -- the extension's calls ----------------------------------------------------------------------------------
    def register(self, name: str, key: str, offset: int, byte_size: int) -> None:
        self._check_enabled()
        if not name:
            raise status.invalid("a shared-memory region needs a name")
        if name in self.regions:
            raise already_exists(f"shared-memory region {name!r} is already registered (key "
                                 f"{self.regions[name].key!r}); unregister it first")
        if byte_size <= 0:
            raise status.invalid(f"shared-memory region {name!r}: byte_size must be positive, got {byte_size}")
        if offset < 0:
            raise status.invalid(f"shared-memory region {name!r}: offset must not be negative, got {offset}")
        path = object_path(key)
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise status.invalid(f"shared-memory region {name!r}: no shared-memory object {key!r} on the server's "
                                 f"host ({path}); create it first (shm_open, or tritonclient's "
                                 "create_shared_memory_region) on the same host as the server") from None
        except OSError as exc:
            raise status.invalid(f"shared-memory region {name!r}: cannot open {key!r} ({path}): "
                                 f"{exc.strerror or exc}") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise status.invalid(f"shared-memory region {name!r}: {path} is not a shared-memory object")
            if offset + byte_size > info.st_size:
                raise status.invalid(f"shared-memory region {name!r}: offset {offset} + byte_size {byte_size} is past "
                                     f"the end of {key!r}, which holds {info.st_size} bytes")
            start = offset % mmap.ALLOCATIONGRANULARITY
            mapped = mmap.mmap(fd, start + byte_size, offset=offset - start)
        except BaseException:
            os.close(fd)
            raise
        self.regions[name] = Region(name, key, offset, byte_size, fd, mapped, start)

    def unregister(self, name: str = "") -> None:
        """Forget one region (every region when `name` is empty). A name that is not registered is no error, as in
        Triton: unregistering is idempotent, so a client's clean-up may run twice."""
        self._check_enabled()
        names = [name] if name else list(self.regions)
        for one in names:
            region = self.regions.pop(one, None)
            if region is not None:
                region.close()

    def status(self, name: str = "") -> list[Region]:
        """The registered regions (only `name` when given; an unknown name is NOT_FOUND)."""
        self._check_enabled()
        if not name:
            return [self.regions[n] for n in sorted(self.regions)]
        return [self._region(name)]

    def close(self) -> None:
        """Unmap every region (the server is stopping)."""
        for name in list(self.regions):
            self.regions.pop(name).close()

    # -- tensors ------------------------------------------------------------------------------------------------
    def _region(self, name: str) -> Region:
        region = self.regions.get(name)
        if region is None:
            known = ", ".join(repr(n) for n in sorted(self.regions)) or "none"
            raise status.not_found(f"shared-memory region {name!r} is not registered (registered: {known})")
        return region

    def _window(self, slot: Slot, what: str, need: int, exact: bool) -> np.ndarray:
        """The bytes of `slot` as a uint8 view over the mapping, after checking them against the registered region
        and the object's size now."""
        self._check_enabled()
        region = self._region(slot.region)
        if slot.offset < 0 or slot.byte_size < 0 or slot.offset + slot.byte_size > region.byte_size:
            raise status.invalid(f"{what}: shared-memory offset {slot.offset} + byte size {slot.byte_size} is past "
                                 f"the end of region {region.name!r} ({region.byte_size} bytes)")
        if (slot.byte_size != need) if exact else (slot.byte_size < need):
            rule = "" if exact else "at least "
            raise status.invalid(f"{what}: shared-memory byte size {slot.byte_size} does not fit the tensor, which "
                                 f"needs {rule}{need} bytes (its shape times its datatype's size)")
        end = region.offset + slot.offset + need
        size = os.fstat(region.fd).st_size
        if size < end:
            raise status.invalid(f"{what}: shared-memory region {region.name!r} now ends at byte {size} of "
                                 f"{region.key!r}, before byte {end} this tensor needs (the object was truncated "
                                 "after registration); unregister it and register it again")
        begin = region.start + slot.offset
        return np.frombuffer(region.map, np.uint8, need, begin)

    def read(self, slot: Slot, dtype: np.dtype, shape: list[int], what: str) -> np.ndarray:
        """A private copy of the tensor the slot holds (ONNX Runtime never reads shared pages)."""
        need = math.prod(shape) * dtype.itemsize
        return self._window(slot, what, need, exact=True).view(dtype).reshape(shape).copy()

    def write(self, slot: Slot, array: np.ndarray, what: str) -> None:
        """Copy an output into the slot (one memcpy); the slot may be larger than the tensor."""
        window = self._window(slot, what, array.nbytes, exact=False)
        np.copyto(window.view(array.dtype).reshape(array.shape), array, casting="no")
