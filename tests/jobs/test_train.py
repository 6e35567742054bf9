"""`birefnet train` on a real local Ray Train: 2 CPU workers (DDP over gloo), pairs read from S3 and
checkpoints written there, a kill, a resume.

Each run is started as users start it, a process (and process group) of its own with its own
embedded Ray, so the test can SIGKILL the whole run mid-training and start it again. One run serves
every test (Ray Train's start-up is most of a run's minute); the tests read a copy of its S3 folder.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from birefnet_core.losses import TASK_LOSS_WEIGHTS, BiRefNetLoss
from birefnet_core.model import create_model
from birefnet_core.preprocessing import normalize_batch
from birefnet_core.size import Size
from birefnet_core.variants import IMAGENET_MEAN, IMAGENET_STD
from birefnet_core.weights import detect_backbone, load_model, load_state_dict
from connectors.storage import S3Options, open_input, read_bytes
from connectors.synthetic import encode_image, training_scene
from jobs.common.errors import EXIT_JOB_ERROR, EXIT_OK
from jobs.train.checkpoints import latest_complete_checkpoint
from jobs.train.data import load_pairs
from tests.support.ray_cluster import kill_processes_with_env

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
STEPS = 8
FLAGS = [
    "--backbone", "swin_v1_demo", "--resolution", "64", "--batch-size", "2", "--num-workers", "2",
    "--cpus-per-worker", "1", "--lr", "5e-3", "--augmentations", "flip,enhance", "--val-fraction", "0.25",
    "--epochs", "20", "--max-steps", str(STEPS), "--checkpoint-every-steps", "2", "--keep-checkpoints", "10",
    "--log-every-steps", "1", "--num-cpus", "3", "--object-store-memory", str(150 * 1024**2),
]  # fmt: skip


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")  # uint16 H x W arrays become 16-bit PNGs
    return buffer.getvalue()


def _write_corpus(root: Path) -> None:
    """16 pairs of mixed kinds (JPEG, 16-bit and grey and RGBA PNG, 16-bit mask) and one broken image."""
    for i in range(16):
        image, mask = training_scene(72 + 8 * (i % 3), 64 + 8 * (i % 2), seed=100 + i)
        rgb = np.asarray(image)
        kinds = {
            1: ("png", _png((rgb.astype(np.uint16) * 257)[..., 0])),
            2: ("png", _png(np.asarray(image.convert("L")))),
            3: ("png", _png(np.dstack([rgb, np.full(rgb.shape[:2], 200, np.uint8)]))),
        }
        ext, data = kinds.get(i % 5, ("jpg", encode_image(image)))
        (root / "im").mkdir(parents=True, exist_ok=True)
        (root / "gt").mkdir(parents=True, exist_ok=True)
        (root / "im" / f"scene {i:02d}.{ext}").write_bytes(data)
        gt = _png(mask.astype(np.uint16) * 257) if i == 4 else _png(mask)
        (root / "gt" / f"scene {i:02d}.png").write_bytes(gt)
    (root / "im" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (root / "gt" / "broken.png").write_bytes(_png(np.zeros((8, 8), np.uint8)))


def _env(s3_server) -> tuple[dict[str, str], str]:
    marker = f"BIREFNET_TRAIN_TEST={uuid.uuid4().hex}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "AWS_"))}
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1")
    env.update(
        AWS_ACCESS_KEY_ID=s3_server.key,
        AWS_SECRET_ACCESS_KEY=s3_server.secret,
        AWS_EC2_METADATA_DISABLED="true",
    )
    env.update(dict([marker.split("=", 1)]))
    return env, marker


def _start(args: list[str], log: Path, s3_server) -> tuple[subprocess.Popen, str]:
    env, marker = _env(s3_server)
    with log.open("w") as handle:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jobs.train", *args], cwd=REPO, env=env,
            stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    return proc, marker


def _stop(proc: subprocess.Popen, marker: str) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    kill_processes_with_env(marker)


def _complete_checkpoint_step(run_uri: str, s3: S3Options) -> int | None:
    """Step of the newest whole checkpoint folder: a kill during Ray's upload leaves partial ones."""
    folder = latest_complete_checkpoint(run_uri, s3)
    if folder is None:
        return None
    return json.loads(read_bytes(f"{folder}/checkpoint.json", s3))["progress"]["step"]


@dataclass(frozen=True)
class TrainedRun:
    run: Path  # a local copy of the run's S3 folder
    run_uri: str
    s3: S3Options
    killed_at: int
    logs: str


@pytest.fixture(scope="module")
def killed_and_resumed(s3_server, tmp_path_factory) -> TrainedRun:
    root = tmp_path_factory.mktemp("train")
    data = root / "data"
    _write_corpus(data)
    bucket = s3_server.create_bucket()
    fs = s3_server.filesystem()
    for path in data.rglob("*.*"):
        fs.pipe(f"{bucket}/data/{path.relative_to(data).as_posix()}", path.read_bytes())
    s3 = s3_server.options()
    run_uri = f"s3://{bucket}/runs/tiny"
    args = [
        "--data", f"s3://{bucket}/data", "--output", f"s3://{bucket}/runs", "--name", "tiny",
        "--s3-endpoint-url", s3_server.endpoint_url, *FLAGS,
    ]  # fmt: skip
    proc, marker = _start(args, root / "first.log", s3_server)
    try:
        deadline = time.monotonic() + 300
        while (killed_at := _complete_checkpoint_step(run_uri, s3)) is None:
            assert proc.poll() is None, (root / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.5)
    finally:
        _stop(proc, marker)
    proc, marker = _start(args, root / "second.log", s3_server)
    try:
        code = proc.wait(timeout=400)
    finally:
        _stop(proc, marker)
    second = (root / "second.log").read_text()
    assert code == EXIT_OK, second[-3000:]
    fs.invalidate_cache()
    fs.get(f"{bucket}/runs/tiny", str(root / "runs" / "tiny"), recursive=True)
    logs = (root / "first.log").read_text() + second
    return TrainedRun(root / "runs" / "tiny", run_uri, s3, killed_at, logs)


def test_a_killed_run_resumes_from_its_checkpoint_with_step_and_optimiser_state(killed_and_resumed):
    run, killed_at = killed_and_resumed.run, killed_and_resumed.killed_at
    assert 2 <= killed_at < STEPS, "the first run ended before it was killed; make it longer"
    summary = json.loads((run / "training.json").read_text())
    assert summary["progress"]["step"] == STEPS
    assert summary["progress"]["resumed_from"][0] >= killed_at
    infos = {p.parent: json.loads(p.read_text()) for p in run.glob("checkpoint_*/checkpoint.json")}
    last = max(infos, key=lambda folder: infos[folder]["progress"]["step"])
    state = torch.load(last / "training_state.pt", weights_only=True)
    adam_steps = {float(s["step"]) for s in state["optimizer"]["state"].values()}
    assert adam_steps == {float(STEPS)}  # AdamW's moments went on from the checkpoint, not from zero


def _training_loss(model: torch.nn.Module, data: Path) -> float:
    """The general task's loss over every readable pair at 64 px, without augmentation or dropout noise."""
    names = sorted(p.stem for p in (data / "im").iterdir() if p.stem != "broken")
    images = {p.stem: str(p) for p in (data / "im").iterdir()}
    batch = {
        "key": np.array(names, dtype=object),
        "image_uri": np.array([images[n] for n in names], dtype=object),
        "mask_uri": np.array([str(data / "gt" / f"{n}.png") for n in names], dtype=object),
    }
    rows = load_pairs(batch, Size(64, 64), [], None, train=True)
    x = normalize_batch(torch.from_numpy(rows["image"]), IMAGENET_MEAN, IMAGENET_STD)
    gt = torch.from_numpy(rows["mask"])[:, None].float() / 255
    torch.manual_seed(0)
    with torch.no_grad():
        return BiRefNetLoss(TASK_LOSS_WEIGHTS["general"])(model.train()(x), gt).item()


def test_the_loss_falls_and_validation_is_scored(killed_and_resumed):
    run = killed_and_resumed.run
    data = run.parents[1] / "data"
    torch.manual_seed(7)  # the run's --seed: its initial weights
    initial = _training_loss(create_model("swin_v1_demo"), data)
    trained = _training_loss(load_model(str(run / "model.safetensors")), data)
    assert trained < initial, (initial, trained)
    final = json.loads((run / "training.json").read_text())["metrics"]
    assert 0 <= final["val_S"] <= 1 and 0 <= final["val_MAE"] <= 1


def test_a_broken_pair_is_skipped_with_its_name(killed_and_resumed):
    assert "skipping training pair broken" in killed_and_resumed.logs


def test_the_final_model_loads_with_load_model_and_predicts(killed_and_resumed):
    state_dict, _ = load_state_dict(str(killed_and_resumed.run / "model.safetensors"))
    assert detect_backbone(state_dict) == "swin_v1_demo"
    # Straight from the store, as a job given --weights s3://... loads it.
    trained = killed_and_resumed
    model = load_model(f"{trained.run_uri}/model.safetensors", opener=lambda uri: open_input(uri, trained.s3))
    with torch.inference_mode():
        logits = model(torch.randn(1, 3, 64, 96))
    assert logits.shape == (1, 1, 64, 96) and torch.isfinite(logits).all()


def test_unpaired_training_data_is_one_line_and_exit_2(tmp_path, capsys):
    from jobs.train import main

    (tmp_path / "im").mkdir()
    (tmp_path / "gt").mkdir()
    (tmp_path / "im" / "a.jpg").write_bytes(encode_image(training_scene(32, 32, 0)[0]))
    code = main(["--data", str(tmp_path), "--output", str(tmp_path / "runs"), "--backbone", "swin_v1_demo"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_JOB_ERROR
    assert len(err) == 1 and "images without a mask" in err[0] and "a.jpg" in err[0]
