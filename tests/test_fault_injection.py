"""Fault injection: a full disk, a read-only output folder and kill -9 at random points of prepare, train, segment
and export. Whatever happens, no file under its final name is ever corrupt, and every command that is not killed
either succeeds or exits 2 with one ``dvcl: error:`` line (no traceback).

The faults are real: a file-size limit (``RLIMIT_FSIZE``, the kernel answers EFBIG exactly where a full disk
answers ENOSPC, and ITK's NIfTI writer ignores both), a small tmpfs and read-only mounts where this process may
mount (root), ``chmod`` otherwise, and SIGKILL. Kill points are drawn from a seeded RNG
(``DVCL_FAULT_SEED``, default 0) so a failure can be replayed.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, List, Optional

import numpy as np
import pytest
import SimpleITK as sitk

from dvcl.cli.main import main
from dvcl.data.cache import npy_problem
from dvcl.errors import OutputWriteError
from dvcl.io.images import image_suffix, read_image, write_image

ROOT = Path(__file__).resolve().parents[1]
RNG = random.Random(int(os.environ.get("DVCL_FAULT_SEED", "0")))
TRAIN_ARGS = ["--method", "supervised", "--profile", "quick", "--labeled-fraction", "0.5", "--patch", "8", "16", "16",
              "--workers", "0", "--device", "cpu", "--set", "val_roi=[8,16,16]", "--set", "checkpoint_every=2",
              "--set", "network.channels=[4,8]", "--set", "batch_labeled=1"]


# ----------------------------------------------------------------------------------------------- helpers
def dvcl_cmd(*args: str) -> List[str]:
    return [sys.executable, "-m", "dvcl", "-q", *args]


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}


def tiny_ct(path: Path, seed: int = 0) -> Path:
    """A 24 x 24 x 12 CT-like volume (air, fat, a soft-tissue box)."""
    rng = np.random.default_rng(seed)
    arr = np.full((12, 24, 24), -100.0, np.float32)
    arr[0] = -1000.0
    arr[3:9, 5:15, 5:15] = 60.0
    arr += rng.normal(0, 5, arr.shape).astype(np.float32)
    img = sitk.GetImageFromArray(arr.astype(np.int16))
    img.SetSpacing((2.5, 2.5, 5.0))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path))
    return path


def assert_one_line_error(rc: int, stderr: str, expect: Optional[str] = None) -> str:
    """rc 2, no traceback, exactly one ``dvcl: error:`` line (which is returned)."""
    assert rc == 2, stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-2000:]
    errors = [ln for ln in stderr.splitlines() if ln.startswith("dvcl: error:")]
    assert len(errors) == 1, stderr[-2000:]
    if expect:
        assert expect in errors[0], errors[0]
    return errors[0]


def assert_no_corrupt_finals(root: Path) -> int:
    """Every file under its final name (not a hidden temporary) is whole; returns how many were checked."""
    import torch
    from safetensors.torch import load_file

    checked = 0
    for p in sorted(root.rglob("*")):
        if not p.is_file() or any(part.startswith(".") for part in p.relative_to(root).parts):
            continue
        name = p.name
        if image_suffix(p) and not name.endswith(".seg.nrrd"):
            read_image(p)  # our reader: header vs size, NIfTI byte count and gzip integrity
        elif name.endswith(".seg.nrrd"):
            sitk.ReadImage(str(p))
        elif name.endswith(".json"):
            json.loads(p.read_text())
        elif name.endswith(".npy"):
            assert npy_problem(p) is None, p
        elif name.endswith(".safetensors"):
            load_file(str(p))
        elif name.endswith(".pt"):
            torch.load(str(p), map_location="cpu", weights_only=True)
        elif name.endswith((".yaml", ".csv", ".md")):
            p.read_text()
        else:
            continue
        checked += 1
    return checked


@contextlib.contextmanager
def mounted_tmpfs(where: Path, size: str, read_only: bool = False) -> Iterator[Path]:
    """A real small (or read-only) file system, when this process may mount (root); else the test skips."""
    where.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if read_only else "")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or r.returncode})")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


@contextlib.contextmanager
def read_only_folder(where: Path) -> Iterator[Path]:
    """A folder nobody may write into: a read-only mount as root (permission bits do not bind root), chmod
    0555 otherwise."""
    if os.geteuid() == 0:
        with mounted_tmpfs(where, "1m", read_only=True) as p:
            yield p
        return
    where.mkdir(parents=True, exist_ok=True)
    where.chmod(0o555)
    try:
        yield where
    finally:
        where.chmod(0o755)


def _fsize_limit(limit: int):
    def setup() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG instead of killing us
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return setup


# ----------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(scope="module")
def ct(work) -> Path:
    return tiny_ct(work / "inputs" / "tiny.nii.gz")


@pytest.fixture(scope="module")
def trained_run(work, tiny_cache) -> Path:
    run = work / "run_done"
    assert main(["-q", "--progress", "none", "train", "--data", str(tiny_cache), "--out", str(run),
                 "--iterations", "2", "--val-every", "2", *TRAIN_ARGS]) == 0
    return run


# ----------------------------------------------------------------------------------------------- disk full
def test_disk_full_every_format_fails_cleanly(tmp_path):
    """A file-size limit makes every write fail part-way (ITK's NIfTI writer says nothing): each format must
    raise OutputWriteError and leave neither a final file nor a temporary."""
    script = (
        "import json, sys\n"
        "import numpy as np, SimpleITK as sitk\n"
        "from dvcl.errors import OutputWriteError\n"
        "from dvcl.io.segmentation import write_segmentation\n"
        "lab = sitk.GetImageFromArray((np.random.default_rng(0).random((40, 64, 64)) * 5).astype(np.uint8))\n"
        "out = {}\n"
        "for ext in ('nii.gz', 'nii', 'seg.nrrd', 'nrrd', 'mha'):\n"
        "    try:\n"
        "        write_segmentation(lab, f'{sys.argv[1]}/label.{ext}')\n"
        "        out[ext] = 'written'\n"
        "    except OutputWriteError as exc:\n"
        "        out[ext] = 'OutputWriteError: ' + str(exc)\n"
        "print(json.dumps(out))\n"
    )
    r = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, env=env(),
                       preexec_fn=_fsize_limit(20_000), timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    outcome = json.loads(r.stdout.strip().splitlines()[-1])
    assert all(v.startswith("OutputWriteError") for v in outcome.values()), outcome
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no final name, no temporary left behind


def test_disk_full_every_command_exits_2_with_one_line(work, ct, tiny_cache, trained_run):
    """segment, prepare, train and export under a file-size limit (the kernel's EFBIG, as a full disk's
    ENOSPC, part-way through a write), run at once: each exits 2 with one line, no final file is corrupt."""
    base = work / "full"
    jobs = {
        "segment": dvcl_cmd("segment", str(ct), "-o", str(base / "seg" / "tiny.nii.gz"), "--model", "phantom_demo",
                            "--device", "cpu"),
        "prepare": dvcl_cmd("prepare", str(tiny_cache.parent / "data"), "-o", str(base / "cache"), "--preset",
                            "flare22", "--workers", "2"),
        "train": dvcl_cmd("train", "--data", str(tiny_cache), "--out", str(base / "run"), "--iterations", "4",
                          "--val-every", "2", *TRAIN_ARGS),
        "export": dvcl_cmd("export", str(trained_run), "-o", str(base / "model")),
    }
    limit = {"segment": 300}  # a compressed label map of the tiny CT is smaller than 20 kB
    procs = {k: subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env(),
                                 preexec_fn=_fsize_limit(limit.get(k, 20_000))) for k, cmd in jobs.items()}
    for k, p in procs.items():
        _, stderr = p.communicate(timeout=300)
        line = assert_one_line_error(p.returncode, stderr, "cannot write")
        assert "disk full" in line or "file-size limit" in line or "too large" in line, (k, line)
    assert not (base / "seg" / "tiny.nii.gz").exists() and not (base / "model" / "model.json").exists()
    assert not list(base.glob(".cache.staging-*"))
    assert_no_corrupt_finals(base)


def test_small_tmpfs(tmp_path, ct, capsys):
    """A real full file system: the up-front space check refuses, and the writer itself never leaves a file."""
    with mounted_tmpfs(tmp_path / "small", "256k") as small:
        rc = main(["segment", str(ct), "-o", str(small / "seg.nii.gz"), "--model", "phantom_demo", "--device", "cpu"])
        assert_one_line_error(rc, capsys.readouterr().err, "MiB free")
        rc = main(["phantom", str(small / "ph"), "--labeled", "1", "--unlabeled", "0"])
        assert_one_line_error(rc, capsys.readouterr().err, "MiB free")
        big = sitk.GetImageFromArray(np.random.default_rng(0).random((64, 64, 64)).astype(np.float32))
        for name in ("img.nii.gz", "img.nii", "img.mha", "img.nrrd"):
            with pytest.raises(OutputWriteError):
                write_image(big, small / name)
        assert [p.name for p in small.rglob("*") if p.is_file()] == []


# ----------------------------------------------------------------------------------------------- read-only
def test_read_only_output_every_command(tmp_path, ct, tiny_cache, trained_run, capsys):
    with read_only_folder(tmp_path / "ro") as ro:
        commands = {
            "segment": ["segment", str(ct), "-o", str(ro / "seg.nii.gz"), "--model", "phantom_demo",
                        "--device", "cpu"],
            "segment folder": ["segment", str(ct), "-o", str(ro / "segs"), "--model", "phantom_demo"],
            "prepare": ["prepare", str(tiny_cache.parent / "data"), "-o", str(ro / "cache"), "--workers", "1",
                        "--preset", "flare22"],
            "train": ["train", "--data", str(tiny_cache), "--out", str(ro / "run"), "--iterations", "2", *TRAIN_ARGS],
            "export": ["export", str(trained_run), "-o", str(ro / "model")],
            "phantom": ["phantom", str(ro / "ph"), "--labeled", "1", "--unlabeled", "0"],
        }
        for what, args in commands.items():
            for mode in ("bar", "json"):
                rc = main(["--progress", mode, *args])
                captured = capsys.readouterr()
                line = assert_one_line_error(rc, captured.err)
                assert "read-only" in line or "not writable" in line or "permission" in line, (what, line)
                if mode == "json":
                    events = [json.loads(ln) for ln in captured.out.splitlines() if ln.startswith("{")]
                    assert events and events[-1]["event"] == "error" and events[-1]["message"] in line, what
        assert list(ro.iterdir()) == []


# ----------------------------------------------------------------------------------------------- kill -9
def _children(pid: int) -> List[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_for(cond, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_kill_9_at_random_points(work, tiny_cache, trained_run, ct, capsys):
    """prepare (2 workers), train, segment and export run at once; each is killed with SIGKILL at a random
    point of its work. Afterwards no final-named file is corrupt, no prepare worker lives on, a second train
    into the live run's folder was refused, and the next run of each command succeeds (repairing what the
    kill left)."""
    data = work / "kill_data"
    src = ROOT / "tests" / "data" / "abdomen_ct_3mm"
    for sub in ("images", "labels"):
        (data / "labeled" / sub).mkdir(parents=True, exist_ok=True)
    for i in range(3):  # real CT copies: slow enough that the workers are busy when the parent dies
        shutil.copy(src / "image.nii.gz", data / "labeled" / "images" / f"c{i}.nii.gz")
        shutil.copy(src / "label_flare22.nii.gz", data / "labeled" / "labels" / f"c{i}.nii.gz")
    cache, run, segs, model = work / "kill_cache", work / "kill_run", work / "kill_segs", work / "kill_model"
    jobs = {
        "prepare": dvcl_cmd("prepare", str(data), "-o", str(cache), "--preset", "flare22", "--workers", "2"),
        "train": dvcl_cmd("train", "--data", str(tiny_cache), "--out", str(run), "--iterations", "400",
                          "--val-every", "4", *TRAIN_ARGS),
        "segment": dvcl_cmd("segment", str(ct), "-o", str(segs), "--model", "phantom_demo", "--device", "cpu",
                            "--format", "seg.nrrd", "--volumes", "csv"),
        "export": dvcl_cmd("export", str(trained_run), "-o", str(model)),
    }
    # when each job has started writing, then a random delay within its writing phase
    started = {
        "prepare": lambda: any(work.glob(".kill_cache.staging-*")),
        "train": lambda: (run / "checkpoints").is_dir(),
        "segment": lambda: True,
        "export": lambda: True,
    }
    delay = {"prepare": RNG.uniform(0.0, 1.0), "train": RNG.uniform(0.5, 3.0), "segment": RNG.uniform(1.0, 7.0),
             "export": RNG.uniform(1.0, 5.0)}
    t_start = time.monotonic()
    procs = {k: subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env())
             for k, cmd in jobs.items()}
    t0 = {k: None for k in jobs}
    killed, workers = set(), []
    deadline = time.monotonic() + 90
    refused_second_train = False
    while time.monotonic() < deadline and any(p.poll() is None for p in procs.values()):
        for k, p in procs.items():
            if p.poll() is not None or k in killed:
                continue
            if t0[k] is None and started[k]() and (k != "prepare" or _children(p.pid)):
                t0[k] = time.monotonic()  # prepare: once its pool workers run
            if k == "train" and t0[k] is not None and not refused_second_train and (run / ".lock").exists():
                rc = main(["-q", "train", "--data", str(tiny_cache), "--out", str(run), "--iterations", "2",
                           "--overwrite", *TRAIN_ARGS])
                assert_one_line_error(rc, capsys.readouterr().err, "in use by pid")
                refused_second_train = True
            if t0[k] is not None and time.monotonic() - t0[k] >= delay[k]:
                if k == "prepare":
                    workers = _children(p.pid)
                p.kill()
                killed.add(k)
        time.sleep(0.02)
    for k, p in procs.items():
        rc = p.wait(timeout=60)
        if k not in killed or rc != -signal.SIGKILL:
            assert rc == 0 or assert_one_line_error(rc, p.stderr.read()), (k, rc)
        p.stderr.close()
    assert refused_second_train or "train" not in killed
    print(f"killed {sorted(killed)} after {delay}; prepare workers at the kill: {workers}; "
          f"{time.monotonic() - t_start:.1f} s")

    # workers die with their parent (PR_SET_PDEATHSIG + parent watch)
    assert "prepare" not in killed or workers, "prepare was killed before its workers started"
    assert _wait_for(lambda: not any(_alive(w) for w in workers), 5.0), [w for w in workers if _alive(w)]
    for folder in (cache, run, segs, model):
        if folder.exists():
            assert_no_corrupt_finals(folder)

    # every command runs again to success, repairing what the kill left (stale staging, stale lock)
    t1 = time.monotonic()
    assert main(["-q", "prepare", str(data), "-o", str(cache), "--preset", "flare22", "--workers", "1"]) == 0
    print(f"prepare again {time.monotonic() - t1:.1f} s")
    assert not any(work.glob(".kill_cache.staging-*"))
    # a new run into the killed run's folder takes over its stale lock
    assert main(["-q", "train", "--data", str(tiny_cache), "--out", str(run), "--overwrite", "--iterations", "4",
                 "--val-every", "4", *TRAIN_ARGS]) == 0
    assert main(["-q", "segment", str(ct), "-o", str(segs), "--model", "phantom_demo", "--device", "cpu",
                 "--format", "seg.nrrd", "--overwrite"]) == 0
    assert main(["-q", "export", str(trained_run), "-o", str(model), "--overwrite"]) == 0
    for folder in (cache, run, segs, model):
        assert assert_no_corrupt_finals(folder) > 0


def test_stale_temporaries_of_killed_runs_are_cleaned(tmp_path, ct, capsys):
    """A kill -9 mid-write leaves a hidden temporary; the next command into that folder removes it once it is
    stale (an hour untouched: no live writer leaves its file alone that long), never a fresh one."""
    out = tmp_path / "segs"
    (out / "sub").mkdir(parents=True)
    stale = [out / ".ct.k9x2ab7q.tmp.nii.gz", out / "sub" / ".last.u5v6w7x8.tmp.safetensors"]
    fresh = out / ".ct.fresh123.tmp.nii.gz"
    for p in stale + [fresh]:
        p.write_bytes(b"partial")
    old = time.time() - 2 * 3600
    for p in stale:
        os.utime(p, (old, old))
    assert main(["-q", "segment", str(ct), "-o", str(out), "--model", "phantom_demo", "--device", "cpu"]) == 0
    assert not any(p.exists() for p in stale) and fresh.exists()
    assert (out / "tiny.nii.gz").is_file()
