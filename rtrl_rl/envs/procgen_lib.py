"""ProcGen's compiled games, driven through their C interface with ``ctypes``.

The ``procgen`` wheel (published as ``procgen-mirror``) holds two things: the games, compiled
into ``procgen/data/prebuilt/libenv.so`` with their assets under ``procgen/data/assets``, and
Python wrappers built on ``gym3`` and the legacy ``gym``, which pin ``numpy < 2``. The games
need neither: ``libenv.so`` exports the small libenv C interface (``libenv_make``,
``libenv_act``, ``libenv_observe``, ...), and this module calls it directly. It locates the
installed package without importing it (so ``gym3`` and ``gym`` need not be installed, and
the wheel can be installed with ``pip install --no-deps``), and fills in the options the way
``procgen.ProcgenGym3Env`` does, so that the same arguments play the same levels.

``ProcgenLib`` keeps the buffers it hands the C side for its whole life; ``observe`` returns
views of them (valid until the next ``act``/``observe``), unlike gym3, which copies.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import random
from pathlib import Path

import numpy as np

LIBENV_VERSION = 1
_MAX_NAME_LEN = 128
_MAX_NDIM = 16
_MAX_STATE_SIZE = 2**20  # procgen's own bound on one game's serialized state

# enum values from libenv.h
_DTYPE_UINT8, _DTYPE_INT32, _DTYPE_FLOAT32 = 1, 2, 3
_SCALAR_REAL, _SCALAR_DISCRETE = 1, 2
_SPACE_OBSERVATION, _SPACE_ACTION, _SPACE_INFO = 1, 2, 3
_NUMPY_DTYPE = {_DTYPE_UINT8: np.uint8, _DTYPE_INT32: np.int32, _DTYPE_FLOAT32: np.float32}

# procgen.env: DistributionMode in game.h; 'exploration' is a fixed level of 'hard'
DISTRIBUTION_MODES = {"easy": 0, "hard": 1, "extreme": 2, "memory": 10}
EXPLORATION_LEVEL_SEEDS = {
    "coinrun": 1949448038, "caveflyer": 1259048185, "leaper": 1318677581,
    "jumper": 1434825276, "maze": 158988835, "heist": 876640971, "climber": 1561126160,
    "ninja": 1123500215,
}
NUM_COMBOS = 15  # procgen.env.BaseProcgenEnv.get_combos(): the same 15 actions for every game


class _Value(ctypes.Union):
    _fields_ = [("uint8", ctypes.c_uint8), ("int32", ctypes.c_int32),
                ("float32", ctypes.c_float)]


class _TensorType(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char * _MAX_NAME_LEN), ("scalar_type", ctypes.c_int),
                ("dtype", ctypes.c_int), ("shape", ctypes.c_int * _MAX_NDIM),
                ("ndim", ctypes.c_int), ("low", _Value), ("high", _Value)]


class _Option(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char * _MAX_NAME_LEN), ("dtype", ctypes.c_int),
                ("count", ctypes.c_int), ("data", ctypes.c_void_p)]


class _Options(ctypes.Structure):
    _fields_ = [("items", ctypes.POINTER(_Option)), ("count", ctypes.c_int)]


class _Buffers(ctypes.Structure):
    _fields_ = [("ob", ctypes.POINTER(ctypes.c_void_p)), ("rew", ctypes.c_void_p),
                ("first", ctypes.c_void_p), ("info", ctypes.POINTER(ctypes.c_void_p)),
                ("ac", ctypes.POINTER(ctypes.c_void_p))]


def package_dir() -> Path | None:
    """The installed ``procgen`` package's folder, found without importing it; ``None`` when
    it is not installed or has no prebuilt ``libenv.so``."""
    try:
        spec = importlib.util.find_spec("procgen")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        if (Path(loc) / "data" / "prebuilt" / "libenv.so").exists():
            return Path(loc)
    return None


def available() -> bool:
    return package_dir() is not None


_LIB: ctypes.CDLL | None = None


def _load() -> ctypes.CDLL:
    global _LIB
    if _LIB is not None:
        return _LIB
    root = package_dir()
    if root is None:
        raise ImportError(
            "ProcGen is not installed: pip install --no-deps 'procgen-mirror==0.10.7' "
            "(Python 3.11 or 3.12; see docs/get-started/installation.md)")
    # RTLD_DEEPBIND, as gym3 does: the games' bundled Qt keeps to its own symbols
    mode = os.RTLD_NOW | os.RTLD_LOCAL | getattr(os, "RTLD_DEEPBIND", 0)
    lib = ctypes.CDLL(str(root / "data" / "prebuilt" / "libenv.so"), mode=mode)
    vp, c_int = ctypes.c_void_p, ctypes.c_int
    lib.libenv_version.restype = c_int
    lib.libenv_version.argtypes = []
    lib.libenv_make.restype = vp
    lib.libenv_make.argtypes = [c_int, _Options]
    lib.libenv_get_tensortypes.restype = c_int
    lib.libenv_get_tensortypes.argtypes = [vp, c_int, ctypes.POINTER(_TensorType)]
    lib.libenv_set_buffers.restype = None
    lib.libenv_set_buffers.argtypes = [vp, ctypes.POINTER(_Buffers)]
    for name in ("libenv_observe", "libenv_act", "libenv_close"):
        getattr(lib, name).restype = None
        getattr(lib, name).argtypes = [vp]
    lib.get_state.restype = c_int
    lib.get_state.argtypes = [vp, c_int, ctypes.c_char_p, c_int]
    lib.set_state.restype = None
    lib.set_state.argtypes = [vp, c_int, ctypes.c_char_p, c_int]
    version = lib.libenv_version()
    if version != LIBENV_VERSION:
        raise RuntimeError(f"libenv version {version}, expected {LIBENV_VERSION}")
    _LIB = lib
    return lib


def _aligned(shape: tuple[int, ...], dtype, align: int = 64) -> np.ndarray:
    """A zeroed array whose data starts on an ``align``-byte boundary (as gym3 allocates)."""
    dtype = np.dtype(dtype)
    n = int(np.prod(shape)) * dtype.itemsize
    raw = np.zeros(n + align - 1, dtype=np.uint8)
    offset = -raw.ctypes.data % align
    return raw[offset: offset + n].view(dtype).reshape(shape)


class ProcgenLib:
    """``num`` games of ``env_name`` in one C env, with gym3's ``observe``/``act`` protocol.

    Keyword arguments are those of ``procgen.ProcgenGym3Env`` that this project uses;
    ``distribution_mode`` is a name, ``"exploration"`` included.
    """

    def __init__(
        self, num: int, env_name: str, *, distribution_mode: str = "hard",
        num_levels: int = 0, start_level: int = 0, rand_seed: int | None = None,
        num_threads: int = 4, center_agent: bool = True, use_backgrounds: bool = True,
        paint_vel_info: bool = False, use_sequential_levels: bool = False,
    ) -> None:
        lib = _load()
        root = package_dir()
        assert root is not None
        if distribution_mode == "exploration":
            if env_name not in EXPLORATION_LEVEL_SEEDS:
                raise ValueError(f"{env_name} has no exploration mode")
            mode = DISTRIBUTION_MODES["hard"]
            num_levels, start_level = 1, EXPLORATION_LEVEL_SEEDS[env_name]
        elif distribution_mode in DISTRIBUTION_MODES:
            mode = DISTRIBUTION_MODES[distribution_mode]
        else:
            raise ValueError(f"unknown distribution_mode {distribution_mode!r}")
        if rand_seed is None:
            rand_seed = random.SystemRandom().randint(0, 2**31 - 1)
        # the order and types of procgen.ProcgenGym3Env's options
        options = {
            "center_agent": bool(center_agent), "use_generated_assets": False,
            "use_monochrome_assets": False, "restrict_themes": False,
            "use_backgrounds": bool(use_backgrounds), "paint_vel_info": bool(paint_vel_info),
            "distribution_mode": mode, "env_name": env_name, "num_levels": int(num_levels),
            "start_level": int(start_level), "num_actions": NUM_COMBOS,
            "use_sequential_levels": bool(use_sequential_levels), "debug_mode": 0,
            "rand_seed": int(rand_seed), "num_threads": int(num_threads),
            "render_human": False,
            # read only by the first env made in a process
            "resource_root": str(root / "data" / "assets") + os.sep,
        }
        self._lib = lib
        self.num = num
        self._keepalive: list = []
        items = (_Option * len(options))()
        for item, (key, value) in zip(items, options.items(), strict=True):
            item.name = key.encode()
            if isinstance(value, str):
                data = ctypes.create_string_buffer(value.encode())
                item.dtype, item.count = _DTYPE_UINT8, len(value.encode())
            elif isinstance(value, bool):
                data = ctypes.c_uint8(value)
                item.dtype, item.count = _DTYPE_UINT8, 1
            else:
                data = ctypes.c_int32(value)
                item.dtype, item.count = _DTYPE_INT32, 1
            item.data = ctypes.addressof(data)
            self._keepalive.append(data)
        self._keepalive.append(items)
        self._handle = lib.libenv_make(num, _Options(items, len(options)))
        if not self._handle:
            raise RuntimeError(f"libenv_make failed for {env_name}")

        self._ob, ob_ptrs, _ = self._allocate(_SPACE_OBSERVATION)
        self._ac, ac_ptrs, self.num_actions = self._allocate(_SPACE_ACTION)
        self._info, info_ptrs, _ = self._allocate(_SPACE_INFO)
        self._rew = _aligned((num,), np.float32)
        self._first = _aligned((num,), np.bool_)
        self._buffers = _Buffers(ob_ptrs, self._rew.ctypes.data, self._first.ctypes.data,
                                 info_ptrs, ac_ptrs)
        lib.libenv_set_buffers(self._handle, ctypes.byref(self._buffers))
        self._state_buf = ctypes.create_string_buffer(_MAX_STATE_SIZE)
        self.closed = False

    def _allocate(self, space: int):
        """Arrays ``[num, *shape]`` for each tensor of ``space``, the pointer array the C
        side writes through (tensor-major: ``ptrs[t * num + env]``), and the number of values
        of its discrete tensor (0 if none)."""
        lib, num = self._lib, self.num
        choices = 0
        count = lib.libenv_get_tensortypes(self._handle, space, None)
        types = (_TensorType * max(count, 1))()
        if count:
            lib.libenv_get_tensortypes(self._handle, space, types)
        arrays: dict[str, np.ndarray] = {}
        ptrs = (ctypes.c_void_p * max(count * num, 1))()
        for t, tt in enumerate(types[:count]):
            if tt.dtype not in _NUMPY_DTYPE:
                raise RuntimeError(f"unsupported libenv dtype {tt.dtype}")
            shape = tuple(tt.shape[j] for j in range(tt.ndim))
            arr = _aligned((num, *shape), _NUMPY_DTYPE[tt.dtype])
            name = tt.name.decode()
            arrays[name] = arr
            for i in range(num):
                ptrs[t * num + i] = arr.ctypes.data + i * arr.strides[0]
            if tt.scalar_type == _SCALAR_DISCRETE:
                choices = int(tt.high.int32 if tt.dtype == _DTYPE_INT32 else tt.high.uint8) + 1
        self._keepalive.append(ptrs)
        return arrays, ptrs, choices

    def observe(self) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
        """``(reward [num], {"rgb": uint8 [num, 64, 64, 3]}, first [num])``: views of this
        env's buffers, overwritten by the next ``act``/``observe``."""
        self._lib.libenv_observe(self._handle)
        return self._rew, self._ob, self._first

    def act(self, actions: np.ndarray) -> None:
        """``actions``: int ``[num]``; the games step (on their threads, if any)."""
        self._ac["action"][:] = actions
        self._lib.libenv_act(self._handle)

    def get_info(self) -> list[dict[str, np.ndarray]]:
        """Per game: ``level_seed``, ``prev_level_seed``, ``prev_level_complete``, ... (copies)."""
        self._lib.libenv_observe(self._handle)
        return [{k: v[i].copy() for k, v in self._info.items()} for i in range(self.num)]

    def get_state(self) -> list[bytes]:
        """Each game's serialized state (level, RNGs, positions)."""
        buf = self._state_buf
        out = []
        for i in range(self.num):
            n = self._lib.get_state(self._handle, i, buf, _MAX_STATE_SIZE)
            out.append(ctypes.string_at(buf, n))
        return out

    def set_state(self, states: list[bytes]) -> None:
        if len(states) != self.num:
            raise ValueError(f"{len(states)} states for {self.num} games")
        for i, s in enumerate(states):
            self._lib.set_state(self._handle, i, s, len(s))

    def close(self) -> None:
        """Frees the C env and joins its threads; idempotent."""
        if getattr(self, "closed", True):
            return
        self.closed = True
        self._lib.libenv_close(self._handle)
        self._handle = None

    def __del__(self) -> None:
        self.close()
