"""evaluate: metric parity with an independent CA-SDRi, report files, end to end on tiny models."""

import csv
import json
import math

import numpy as np
import pytest

from s5jax import evaluate
from s5jax.audio import wav
from s5jax.inference.evaluation import batches
from s5jax.labels import CLASSES

SR = 32000
EPS = float(np.finfo(np.float32).eps)


# -- independent implementation of the DCASE 2025 metric (spec §6.2, baseline ca_metric) --

def _snr(est, ref):
    est, ref = est.astype(np.float64), ref.astype(np.float64)
    return 10 * np.log10((np.sum(ref**2) + EPS) / (np.sum((ref - est) ** 2) + EPS))


def _ca_sdri_2025(est, ref, mix0):
    """est/ref: {label: waveform}; returns the mixture's CA-SDRi."""
    tp = set(est) & set(ref)
    fp, fn = set(est) - tp, set(ref) - tp
    vals = [_snr(est[c], ref[c]) - _snr(mix0, ref[c]) for c in tp] + [0.0] * (len(fp) + len(fn))
    return float(np.mean(vals))


@pytest.fixture
def scored_set(tmp_path):
    """A labelled set with soundscapes mix_1 / mix_10 (prefix trap) / mix_2 and estimates."""
    rng = np.random.default_rng(0)
    n = 4000
    root = tmp_path / "data" / "test"
    (root / "soundscape").mkdir(parents=True)
    (root / "oracle_target").mkdir()
    est_dir = tmp_path / "est"
    est_dir.mkdir()
    refs = {"mix_1": ["Speech", "Dishes"], "mix_10": ["Speech", "Blender"], "mix_2": ["Cough"],
            "mix_3": ["Pour", "Typing", "Buzzer"]}
    # Estimated labels: TP+FP+FN mixes; mix_2 has no estimate at all (all FN).
    ests = {"mix_1": ["Speech", "Doorbell"], "mix_10": ["Speech", "Blender", "Typing"],
            "mix_2": [], "mix_3": ["Buzzer", "Pour", "Typing"]}
    truth = {}
    for name, labs in refs.items():
        src = {c: rng.standard_normal(n).astype(np.float32) * 0.1 for c in labs}
        mix = sum(src.values()) + 0.05 * rng.standard_normal(n).astype(np.float32)
        mix4 = np.stack([mix, 0.5 * mix, -0.2 * mix, rng.standard_normal(n) * 0.01]).astype(
            np.float32)
        wav.write(root / "soundscape" / f"{name}.wav", mix4)
        for c, s in src.items():
            wav.write(root / "oracle_target" / f"{name}_{c}.wav", s)
        est = {}
        for c in ests[name]:
            e = (src[c] + rng.uniform(0.01, 0.2) * rng.standard_normal(n) if c in src
                 else rng.standard_normal(n) * 0.1).astype(np.float32)
            wav.write(est_dir / f"{name}_{c}.wav", e)
            est[c] = wav.read(est_dir / f"{name}_{c}.wav")[0]
        truth[name] = (est, src, mix4[0], labs)
    return tmp_path / "data", est_dir, truth


def test_metric_parity_with_independent_ca_sdri(scored_set, tmp_path):
    data, est_dir, truth = scored_set
    out = tmp_path / "out"
    rc = evaluate.main(["--estimates", str(est_dir), "--data", str(data), "--out", str(out),
                        "--no-progress"])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    per_mix = {name: _ca_sdri_2025(e, r, m) for name, (e, r, m, _) in truth.items()}
    assert per_mix["mix_2"] == 0.0
    assert res["ca_sdri"] == pytest.approx(np.mean(list(per_mix.values())), abs=1e-4)
    assert res["n_mixtures"] == 4 and res["n_references"] == 8
    assert (res["tp"], res["fp"], res["fn"]) == (6, 2, 2)
    assert res["label_accuracy"] == pytest.approx(25.0)  # only mix_3 matches exactly
    assert res["oracle_sdri"] is None  # no separator ran
    assert math.isfinite(res["ca_si_sdri"])
    # The scaled-mixture floor: each reference answered by the least-squares-scaled channel 0.
    floor = [np.mean([_snr(m * (np.dot(m, s) / np.dot(m, m)), s) - _snr(m, s)
                      for s in r.values()]) for _, r, m, _ in truth.values()]
    assert res["floor_ca_sdri"] == pytest.approx(np.mean(floor), abs=1e-4)
    assert res["floor_ca_sdri"] > 0
    assert res["floor_ca_si_sdri"] == pytest.approx(0.0, abs=1e-4)
    assert "scaled-mixture floor" in (out / "report.md").read_text()
    rows = {r["soundscape"]: r for r in csv.DictReader(open(out / "per_mixture.csv"))}
    for name, v in per_mix.items():
        assert float(rows[name]["ca_sdri"]) == pytest.approx(v, abs=1e-4)
    # A prefix matcher would also give mix_1 the two mix_10 references.
    assert rows["mix_1"]["ref_labels"] == "Dishes Speech"
    pc = list(csv.DictReader(open(out / "per_class.csv")))
    assert [r["class"] for r in pc] == list(CLASSES)
    speech = pc[CLASSES.index("Speech")]
    assert (speech["tp"], speech["fp"], speech["fn"], speech["n_references"]) == ("2", "0", "0",
                                                                                "2")
    exp = np.mean([_snr(truth[n][0]["Speech"], truth[n][1]["Speech"])
                   - _snr(truth[n][2], truth[n][1]["Speech"]) for n in ("mix_1", "mix_10")])
    assert float(speech["sdri_tp"]) == pytest.approx(exp, abs=1e-4)
    for chart in ("per_class.png", "fp_fn.png"):
        assert (out / chart).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "report.md").read_text()
    assert "CA-SDRi" in md and "per_class.png" in md and "Speech" in md
    # The results file is not replaced without --overwrite.
    assert evaluate.main(["--estimates", str(est_dir), "--data", str(data), "--out", str(out),
                          "--no-progress"]) == 2


def test_unknown_estimate_name_is_an_error(scored_set, tmp_path, capsys):
    data, est_dir, _ = scored_set
    wav.write(est_dir / "mix_7_Speech.wav", np.zeros(4000, np.float32))
    assert evaluate.main(["--estimates", str(est_dir), "--data", str(data), "--out",
                          str(tmp_path / "o"), "--no-progress"]) == 2
    assert "mix_7_Speech.wav" in capsys.readouterr().err
    assert not (tmp_path / "o" / "results.json").exists()


def test_cli_argument_errors(tmp_path, capsys):
    out = str(tmp_path / "o")
    assert evaluate.main(["--out", out]) == 2
    assert "--separator is required" in capsys.readouterr().err
    assert evaluate.main(["--separator", "x", "--out", out]) == 2
    assert "--tagger is required" in capsys.readouterr().err
    assert evaluate.main(["--separator", "x", "--oracle-labels", "--data", str(tmp_path),
                          "--out", out]) == 2
    assert "test/soundscape" in capsys.readouterr().err


def test_non_finite_options_are_refused(scored_set, tmp_path, capsys):
    data, est_dir, _ = scored_set
    base = ["--estimates", str(est_dir), "--data", str(data), "--out", str(tmp_path / "o")]
    assert evaluate.main(base + ["--chunk-seconds", "inf"]) == 2
    assert "chunk_seconds=inf, overlap_seconds=1.0: expected finite" in capsys.readouterr().err
    assert evaluate.main(base + ["--threshold", "nan"]) == 2
    assert "threshold=nan: expected a probability in [0, 1]" in capsys.readouterr().err
    assert evaluate.main(base[:-1] + [""]) == 2  # --out "" would write into the working folder
    assert "--out: expected a folder name" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_outputs_never_overwrite_the_inputs(scored_set, tmp_path, capsys):
    data, est_dir, _ = scored_set
    refs = data / "test" / "oracle_target"
    before = _tree(data), _tree(est_dir)
    base = ["--estimates", str(est_dir), "--data", str(data), "--no-progress", "--overwrite",
            "--allow-empty"]
    # The references are named like estimates: --overwrite would have replaced them.
    for sub in (refs, est_dir, data):
        assert evaluate.main(base + ["--out", str(tmp_path / "o"), "--submission", str(sub)]) == 2
        assert "overlap: estimates must not be written into" in capsys.readouterr().err
    assert evaluate.main(base + ["--out", str(refs), "--write-wavs"]) == 2  # refs/estimates
    assert "overlap: estimates must not be written into" in capsys.readouterr().err
    assert (_tree(data), _tree(est_dir)) == before and not (tmp_path / "o").exists()


def test_estimates_folder_without_estimates_is_refused(scored_set, tmp_path, capsys):
    data, est_dir, _ = scored_set
    empty = tmp_path / "empty"
    empty.mkdir()
    assert evaluate.main(["--estimates", str(empty), "--data", str(data), "--out",
                          str(tmp_path / "o"), "--no-progress"]) == 2
    assert "empty: no estimate <soundscape>_<Label>.wav of the 4 soundscape(s)" in \
        capsys.readouterr().err
    # A soundscape without any estimate is scored (all its references missed) with a note.
    assert evaluate.main(["--estimates", str(est_dir), "--data", str(data), "--out",
                          str(tmp_path / "o"), "--no-progress"]) == 0
    assert "no estimate for 1 soundscape(s) with references (mix_2)" in capsys.readouterr().err


def test_2026_named_estimates_on_a_2025_test_set_are_refused(scored_set, tmp_path, capsys):
    data, est_dir, _ = scored_set
    (est_dir / "mix_1_Speech.wav").rename(est_dir / "mix_1_0_Speech.wav")
    assert evaluate.main(["--estimates", str(est_dir), "--data", str(data), "--out",
                          str(tmp_path / "o"), "--no-progress"]) == 2
    assert ("mix_1_0_Speech.wav: named <soundscape>_<i>_<Label>.wav, as DCASE 2026 estimates "
            "are, but") in capsys.readouterr().err


def test_hidden_and_upper_case_wav_files(scored_set, tmp_path, capsys):
    data, est_dir, _ = scored_set
    sdir, odir = data / "test" / "soundscape", data / "test" / "oracle_target"
    (sdir / "._mix_1.wav").write_bytes(b"Mac OS X resource fork")  # skipped, as elsewhere
    args = ["--estimates", str(est_dir), "--data", str(data), "--no-progress"]
    assert evaluate.main(args + ["--out", str(tmp_path / "o1")]) == 0
    res = json.loads((tmp_path / "o1" / "results.json").read_text())
    assert res["n_mixtures"] == 4
    # A reference the official reader would skip silently is refused, naming it.
    (odir / "mix_1_Speech.wav").rename(odir / "mix_1_Speech.WAV")
    assert evaluate.main(args + ["--out", str(tmp_path / "o2")]) == 2
    assert "mix_1_Speech.WAV: extension '.WAV'; expected lower-case '.wav'" in \
        capsys.readouterr().err
    (odir / "mix_1_Speech.WAV").rename(odir / "mix_1_Speech.wav")
    (est_dir / "mix_1_Speech.wav").rename(est_dir / "mix_1_Speech.Wav")
    assert evaluate.main(args + ["--out", str(tmp_path / "o3")]) == 2
    assert "mix_1_Speech.Wav: extension '.Wav'" in capsys.readouterr().err


def test_batches_group_equal_lengths():
    assert batches([5, 5, 5, 7, 7, 5], 2) == [[0, 1], [2], [3, 4], [5]]


# -- end to end on the embedded dataset with tiny random models --

def test_end_to_end_embedded(tiny_models, embedded_small, tmp_path):
    tagger, separator = tiny_models
    out, sub = tmp_path / "out", tmp_path / "submission"
    rc = evaluate.main(["--tagger", str(tagger), "--separator", str(separator), "--data",
                        str(embedded_small), "--out", str(out), "--write-wavs", "--submission",
                        str(sub), "--batch-size", "4", "--no-progress"])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    for key in ("ca_sdri", "ca_si_sdri", "label_accuracy", "oracle_sdri", "oracle_si_sdri"):
        assert isinstance(res[key], float) and math.isfinite(res[key]), key
    n = len(list((embedded_small / "test" / "soundscape").glob("*.wav")))
    assert res["n_mixtures"] == n
    assert res["tp"] + res["fn"] == res["n_references"]
    assert res["tp"] + res["fp"] == 2 * n  # the tagger always says Blender + Speech
    assert res["setup"]["labels"] == "tagger"
    est = sorted(p.name for p in (out / "estimates").iterdir())
    assert len(est) == 2 * n and all(p.endswith(("_Blender.wav", "_Speech.wav")) for p in est)
    assert sorted(p.name for p in sub.iterdir()) == est
    assert wav.read(sub / est[0]).dtype == np.float32
    import soundfile as sf

    assert sf.info(str(sub / est[0])).subtype == "PCM_16"
    assert sf.info(str(out / "estimates" / est[0])).subtype == "FLOAT"
    # Scoring the written float estimates reproduces the CA-SDRi of the run.
    out2 = tmp_path / "out2"
    assert evaluate.main(["--estimates", str(out / "estimates"), "--data", str(embedded_small),
                          "--out", str(out2), "--no-progress"]) == 0
    res2 = json.loads((out2 / "results.json").read_text())
    assert res2["ca_sdri"] == pytest.approx(res["ca_sdri"], abs=1e-4)
    assert res2["label_accuracy"] == res["label_accuracy"]
    # Rescoring beside the run (--out the run's folder, its estimates/ read) is allowed; writing
    # the estimates back over the folder being read is not.
    assert evaluate.main(["--estimates", str(out / "estimates"), "--data", str(embedded_small),
                          "--out", str(out), "--no-progress", "--overwrite"]) == 0
    assert evaluate.main(["--estimates", str(out / "estimates"), "--data", str(embedded_small),
                          "--out", str(out), "--no-progress", "--overwrite",
                          "--write-wavs"]) == 2
    # DCASE 2026 layout with the 18-sigmoid tagger: eval_results.json gives the tagger's
    # probability of each estimate's class (sigmoid(3) here), not the 1.0 of given labels.
    sub26 = tmp_path / "sub26"
    assert evaluate.main(["--tagger", str(tagger), "--separator", str(separator), "--data",
                          str(embedded_small), "--out", str(tmp_path / "out26"), "--task",
                          "dcase2026", "--submission", str(sub26), "--no-oracle-pass",
                          "--batch-size", "4", "--no-progress"]) == 0
    listing = json.loads((sub26 / "eval_results.json").read_text())["probabilities"]
    probs = [e["probability"] for m in listing for e in m["estimate"]]
    assert len(probs) == 2 * n
    assert probs == pytest.approx([1 / (1 + math.exp(-3.0))] * len(probs), abs=1e-3)


def test_oracle_labels_mode(tiny_models, embedded_small, tmp_path):
    _, separator = tiny_models
    out = tmp_path / "out"
    assert evaluate.main(["--separator", str(separator), "--oracle-labels", "--data",
                          str(embedded_small), "--out", str(out), "--no-progress"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["label_accuracy"] == 100.0 and res["fp"] == 0 and res["fn"] == 0
    # With oracle labels, CA-SDRi is the per-mixture mean of the SDRi over references.
    rows = list(csv.DictReader(open(out / "per_mixture.csv")))
    for r in rows:
        assert float(r["ca_sdri"]) == pytest.approx(float(r["oracle_sdri"]), abs=1e-4)


# -- what a test set may hold, all-or-nothing outputs --

def _tree(root):
    """{relative path: bytes or 'dir'} of everything under ``root``."""
    return {str(p.relative_to(root)): ("dir" if p.is_dir() else p.read_bytes())
            for p in sorted(root.rglob("*"))}


def test_soundscape_without_references_is_refused_unless_allow_empty(scored_set, tmp_path,
                                                                      capsys):
    data, est_dir, _ = scored_set
    for p in (data / "test" / "oracle_target").glob("mix_2_*.wav"):
        p.unlink()
    out = tmp_path / "o"
    args = ["--estimates", str(est_dir), "--data", str(data), "--out", str(out), "--no-progress"]
    assert evaluate.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert "oracle_target: 1 soundscape(s) have no reference" in err and "mix_2" in err
    assert "--allow-empty" in err and not out.exists()
    assert evaluate.main(args + ["--allow-empty"]) == 0
    err = capsys.readouterr().err
    assert "note: 1 soundscape(s) without any reference (mix_2)" in err
    res = json.loads((out / "results.json").read_text())
    assert res["n_without_references"] == 1 and res["n_mixtures"] == 4
    assert res["n_empty_mixtures"] == 1  # no estimate there either: not in the CA-SDRi mean


def test_two_channel_reference_is_refused_naming_it(scored_set, tmp_path, capsys):
    data, est_dir, _ = scored_set
    ref = data / "test" / "oracle_target" / "mix_10_Blender.wav"
    x = wav.read(ref)
    wav.write(ref, np.concatenate([x, x]))
    assert evaluate.main(["--estimates", str(est_dir), "--data", str(data), "--out",
                          str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "mix_10_Blender.wav: 2 channels, expected a mono reference" in err
    assert not (tmp_path / "o").exists()


def test_test_set_at_48_khz_is_resampled(tmp_path, capsys):
    from s5jax.data.testset import TestSet

    rng = np.random.default_rng(5)
    root = tmp_path / "t"
    (root / "soundscape").mkdir(parents=True)
    (root / "oracle_target").mkdir()
    src = rng.standard_normal(6000).astype(np.float32) * 0.1
    mix = np.stack([src + 0.05 * rng.standard_normal(6000).astype(np.float32)] * 4)
    wav.write(root / "soundscape" / "m.wav", mix, sample_rate=48000)
    wav.write(root / "oracle_target" / "m_Speech.wav", src, sample_rate=48000)
    mix32, refs32 = TestSet(root).load(0)
    assert mix32.shape == (4, 4000) and refs32.shape == (1, 4000)
    np.testing.assert_allclose(refs32[0], wav.resample(src[None], 48000, SR)[0])
    est = tmp_path / "est"
    est.mkdir()
    wav.write(est / "m_Speech.wav", refs32[0])
    assert evaluate.main(["--estimates", str(est), "--data", str(root), "--out",
                          str(tmp_path / "o"), "--no-progress"]) == 0
    assert "resampled to 32000 Hz" in capsys.readouterr().err
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    assert res["tp"] == 1 and res["ca_sdri"] > 50  # the estimate is the resampled reference


def test_failed_run_leaves_outputs_as_they_were(scored_set, tmp_path, capsys):
    data, est_dir, _ = scored_set
    out = tmp_path / "o"
    assert evaluate.main(["--estimates", str(est_dir), "--data", str(data), "--out", str(out),
                          "--no-progress"]) == 0
    (out / "mine.txt").write_text("mine")
    before = _tree(tmp_path / "o")
    # A later soundscape's estimate has the wrong length: found mid-run, after files were staged.
    wav.write(est_dir / "mix_3_Pour.wav", np.zeros(100, np.float32))
    assert evaluate.main(["--estimates", str(est_dir), "--data", str(data), "--out", str(out),
                          "--no-progress", "--overwrite"]) == 2
    assert "mix_3_Pour.wav: 100 samples, expected 4000" in capsys.readouterr().err
    assert _tree(out) == before


def test_overwrite_replaces_only_estimate_folders(scored_set, tmp_path, capsys):
    data, est_dir, _ = scored_set
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "thesis.tex").write_text("precious")
    args = ["--estimates", str(est_dir), "--data", str(data), "--out", str(tmp_path / "o"),
            "--submission", str(sub), "--no-progress", "--allow-empty"]  # mix_2 has none
    assert evaluate.main(args) == 2
    assert "sub: exists and is not empty (pass --overwrite)" in capsys.readouterr().err
    assert evaluate.main(args + ["--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "holds thesis.tex, which is not an estimate of this test set" in err
    assert _tree(sub) == {"thesis.tex": b"precious"} and not (tmp_path / "o").exists()
    (sub / "thesis.tex").unlink()
    wav.write(sub / "mix_1_Cough.wav", np.zeros(4000, np.float32))  # an earlier run's
    assert evaluate.main(args + ["--overwrite"]) == 0
    assert sorted(p.name for p in sub.iterdir()) == sorted(p.name for p in est_dir.iterdir())
