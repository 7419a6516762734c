"""Training logs: scalars, audio and spectrogram images reach the TensorBoard event file."""

import io
import struct

import numpy as np
from PIL import Image
from tensorboardX.proto.event_pb2 import Event

from s5jax.training.logging import Logger, read_jsonl, spectrogram_image


def _events(tb_dir):
    """Every ``Event`` in the TFRecord files of ``tb_dir`` (length, crc, payload, crc)."""
    out = []
    for f in sorted(tb_dir.glob("events.out.tfevents.*")):
        raw, pos = f.read_bytes(), 0
        while pos < len(raw):
            (n,) = struct.unpack("<Q", raw[pos:pos + 8])
            out.append(Event.FromString(raw[pos + 12:pos + 12 + n]))
            pos += 12 + n + 4
    return out


def tensorboard_scalars(tb_dir) -> dict[str, list[tuple[int, float]]]:
    """Scalars per tag as TensorBoard shows them: event files in name order, and a
    ``SessionLog.START`` event at step ``p`` (a writer's ``purge_step``) hides every earlier
    event at a step ≥ ``p`` (tensorboard's EventAccumulator._Purge)."""
    out: dict[str, list[tuple[int, float]]] = {}
    for e in _events(tb_dir):
        if e.HasField("session_log") and e.session_log.status == e.session_log.START:
            out = {k: [(s, v) for s, v in rows if s < e.step] for k, rows in out.items()}
        for v in e.summary.value:
            if v.HasField("simple_value"):
                out.setdefault(v.tag, []).append((e.step, v.simple_value))
    return out


def test_a_resumed_logger_drops_what_came_after_its_checkpoint(tmp_path):
    log = Logger(tmp_path, enabled=True)
    for s in range(1, 7):
        log.scalars(s, {"train/loss": float(s)})
    log.close()
    with open(tmp_path / "log.jsonl", "a") as f:
        f.write('{"step": 7, "train/lo')  # a line cut short by a kill
    log = Logger(tmp_path, enabled=True, start_step=4)  # resumed from the checkpoint at 4
    for s in range(5, 9):
        log.scalars(s, {"train/loss": 10.0 * s})
    log.close()
    assert len(list((tmp_path / "tb").iterdir())) == 2  # the old file is kept, hidden in part
    want = [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0), (5, 50.0), (6, 60.0), (7, 70.0), (8, 80.0)]
    assert tensorboard_scalars(tmp_path / "tb")["train/loss"] == want
    assert [(r["step"], r["train/loss"]) for r in read_jsonl(tmp_path)] == want
    # A run starting from scratch again drops everything.
    Logger(tmp_path, enabled=True, start_step=0).close()
    assert read_jsonl(tmp_path) == [] and tensorboard_scalars(tmp_path / "tb")["train/loss"] == []


def test_scalars_audio_and_spectrogram_reach_tensorboard(tmp_path):
    t = np.arange(8000) / 32000
    wave = (2.0 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)  # peak 2: normalised
    log = Logger(tmp_path, enabled=True)
    log.scalars(3, {"train/loss": 0.25})
    log.audio(3, "valid/0/mixture", wave)
    log.close()
    values = {v.tag: (e.step, v) for e in _events(tmp_path / "tb") for v in e.summary.value}
    assert values["train/loss"][1].simple_value == 0.25
    step, audio = values["valid/0/mixture"]
    assert step == 3 and audio.audio.sample_rate == 32000
    assert audio.audio.length_frames == wave.size and audio.audio.num_channels == 1
    assert audio.audio.encoded_audio_string[:4] == b"RIFF"
    step, image = values["valid/0/mixture/spectrogram"]
    expected = spectrogram_image(wave / 2.0)
    assert step == 3 and (image.image.height, image.image.width) == expected.shape[:2]
    assert image.image.colorspace == 3
    assert image.image.encoded_image_string[:8] == b"\x89PNG\r\n\x1a\n"
    decoded = np.asarray(Image.open(io.BytesIO(image.image.encoded_image_string)))
    np.testing.assert_array_equal(decoded, expected)  # lossless: the image we logged
    assert read_jsonl(tmp_path)[0]["train/loss"] == 0.25


def test_spectrogram_puts_low_frequencies_at_the_bottom():
    t = np.arange(16000) / 32000
    img = spectrogram_image(np.sin(2 * np.pi * 500 * t))
    row = int(np.argmax(img[:, :, 0].mean(axis=1)))
    assert img.dtype == np.uint8 and img.shape[2] == 3
    assert row > img.shape[0] * 0.9  # 500 Hz of 16 kHz: near the bottom row
