"""DCASE 2026 evaluation and separation: the edition decided by the models / test set, the
official estimate names ``<soundscape>_<i>_<Label>.wav``, mixtures without targets, CAPI-SDRi and
the accuracies — end to end on the embedded 2026 data with tiny models (a slot tagger that says
silence, VacuumCleaner, VacuumCleaner — a class the embedded test split holds once and twice —
and the ``tiny_models`` separator), checked against a direct computation with ``s5jax.metrics``
and against the official scoring of the written files (``tests/reference/official_evaluate.py``).
"""

import json
import math
import re

import numpy as np
import pytest
import soundfile as sf

from s5jax import evaluate, metrics, separate
from s5jax.audio import wav
from s5jax.data.testset import TestSet, match_soundscape
from s5jax.inference.editions import edition
from s5jax.inference.files import output_names, read_estimates
from s5jax.labels import CLASSES
from tests.reference.official_evaluate import (
    evaluate_estimates,
    verify_json,
    verify_output_filenames,
)

SLOTTED = re.compile(r"^(.+)_(\d+)_([A-Za-z]+)\.wav$")


def test_output_names_by_edition():
    row = [15, -1, -1]
    assert output_names("a", row) == ["a_Speech.wav"]
    assert output_names("a", [15, 15, -1], slotted=True) == ["a_0_Speech.wav", "a_1_Speech.wav"]
    # The slot index is the position in the output row, silence slots counted (none written).
    assert output_names("a", ["silence", "Speech", 2], slotted=True) == [
        "a_1_Speech.wav", "a_2_Blender.wav"]
    assert output_names("a", [-1, -1, -1], slotted=True) == []


def test_estimate_names_of_both_editions_are_read(tmp_path):
    names = {"mix", "mix_1", "s_0000"}
    assert match_soundscape("s_0000_2_Speech.wav", names) == ("s_0000", "Speech", 2)
    assert match_soundscape("s_0000_Speech.wav", names) == ("s_0000", "Speech", None)
    with pytest.raises(ValueError, match="ambiguous"):
        match_soundscape("mix_1_Speech.wav", names)
    for n in ("s_0000_1_Speech.wav", "s_0000_0_Speech.wav", "s_0000_2_Dishes.wav"):
        wav.write(tmp_path / n, np.zeros(10, np.float32))
    got = read_estimates(tmp_path, ["s_0000", "other"])
    assert [(lab, p.name) for lab, p in got["s_0000"]] == [
        ("Speech", "s_0000_0_Speech.wav"), ("Speech", "s_0000_1_Speech.wav"),
        ("Dishes", "s_0000_2_Dishes.wav")]
    assert got["other"] == []


def _direct(test_root, est_dir):
    """CAPI-SDRi, mixture and source accuracy of the estimate files, computed with
    s5jax.metrics on files matched here by name."""
    ts = TestSet(test_root)
    files = sorted(p.name for p in est_dir.iterdir())
    results, est_sets, ref_sets = [], [], []
    for i, it in enumerate(ts):
        mix, refs = ts.load(i)
        mine = [m for m in map(SLOTTED.match, files) if m and m.group(1) == it.name]
        labs = [m.group(3) for m in mine]
        ests = np.stack([wav.read(est_dir / m.group(0))[0] for m in mine]) if mine else \
            np.zeros((0, mix.shape[1]), np.float32)
        results.append(metrics.class_aware_sdri(labs, ests, it.labels, refs, mix[0]))
        est_sets.append(labs)
        ref_sets.append(it.labels)
    return (metrics.mean_value(results), metrics.label_accuracy(est_sets, ref_sets),
            metrics.source_accuracy(est_sets, ref_sets), ts)


def test_evaluate_2026_end_to_end(tiny_slot_tagger, tiny_models, embedded_2026, tmp_path):
    _, separator = tiny_models
    root = embedded_2026 / "synthesized" / "test"
    out, sub = tmp_path / "out", tmp_path / "submission"
    # As a user types it: the dataset root, no --task (the slot-head tagger means 2026).
    assert evaluate.main(["--tagger", str(tiny_slot_tagger), "--separator", str(separator),
                          "--data", str(embedded_2026), "--out", str(out), "--write-wavs",
                          "--submission", str(sub), "--batch-size", "6", "--no-progress"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["task"] == "dcase2026" and res["setup"]["task"] == "dcase2026"
    assert "ca_sdri" not in res and "label_accuracy" not in res
    for key in ("capi_sdri", "capi_si_sdri", "mixture_accuracy", "source_accuracy",
                "oracle_sdri"):
        assert isinstance(res[key], float) and math.isfinite(res[key]), key

    capi, acc_mix, acc_src, ts = _direct(root, out / "estimates")
    n, empty = len(ts), sum(not it.references for it in ts)
    assert empty >= 1 and res["n_without_references"] == empty and res["n_mixtures"] == n
    assert res["n_empty_mixtures"] == 0  # the tagger always names a class twice: all scored
    assert res["capi_sdri"] == pytest.approx(capi, abs=1e-6)
    assert res["mixture_accuracy"] == pytest.approx(acc_mix, abs=1e-9)
    assert res["source_accuracy"] == pytest.approx(acc_src, abs=1e-9)
    assert res["tp"] + res["fp"] == 2 * n

    # The official layout: <name>_<i>_<Label>.wav, silence (slot 0 of the tagger, moved last)
    # writes nothing, the repeated class keeps its two slots; the submission folder holds
    # eval_out/ (16-bit PCM) and eval_results.json, as generate_waveform.py writes them.
    names = sorted(p.name for p in (out / "estimates").iterdir())
    assert names == sorted(f"{it.name}_{i}_VacuumCleaner.wav" for it in ts for i in (0, 1))
    assert sorted(p.name for p in sub.iterdir()) == ["eval_out", "eval_results.json"]
    listing = json.loads((sub / "eval_results.json").read_text())["probabilities"]
    assert [m["soundscape"] for m in listing] == [it.name for it in ts]
    first = listing[0]["estimate"]
    assert [(e["filename"], e["label"]) for e in first] == [
        (f"{ts[0].name}_{i}_VacuumCleaner.wav", "VacuumCleaner") for i in (0, 1)]
    assert all(e["probability"] > 0.99 for m in listing for e in m["estimate"])
    verify_json(str(sub / "eval_results.json"), str(sub / "eval_out"))
    # --overwrite may replace what a run wrote there, and nothing else.
    may_replace = evaluate.submission_only({it.name for it in ts}, edition("dcase2026"))
    assert may_replace(sub) is None
    (sub / "notes.txt").write_text("mine")
    assert "notes.txt" in may_replace(sub)
    (sub / "notes.txt").unlink()
    sub = sub / "eval_out"
    # Real pairings to check: a mixture with the class once (1 TP + 1 FP), one with it twice.
    counts = sorted(it.labels.count("VacuumCleaner") for it in ts)
    assert counts[-1] == 2 and 1 in counts and res["tp"] == sum(counts) > 0
    assert sorted(p.name for p in sub.iterdir()) == names
    assert sf.info(str(sub / names[0])).subtype == "PCM_16"
    assert sf.info(str(out / "estimates" / names[0])).subtype == "FLOAT"
    verify_output_filenames(str(root / "soundscape"), str(sub), list(CLASSES))

    # The official scoring of the written files matches s5jax's.
    off = evaluate_estimates(str(root / "soundscape"), str(root / "oracle_target"),
                             str(out / "estimates"), list(CLASSES))
    assert off["CAPI-SDRi"] == pytest.approx(res["capi_sdri"], abs=1e-4)  # float32 files
    assert off["accuracy_mix"] == pytest.approx(res["mixture_accuracy"], abs=1e-9)
    assert off["accuracy_src"] == pytest.approx(res["source_accuracy"], abs=1e-9)
    out2 = tmp_path / "out2"
    assert evaluate.main(["--estimates", str(sub), "--data", str(embedded_2026), "--out",
                          str(out2), "--no-progress"]) == 0
    res2 = json.loads((out2 / "results.json").read_text())
    assert res2["task"] == "dcase2026"  # no models: the references' names say 2026
    off2 = evaluate_estimates(str(root / "soundscape"), str(root / "oracle_target"), str(sub),
                              list(CLASSES))
    assert off2["CAPI-SDRi"] == pytest.approx(res2["capi_sdri"], abs=1e-4)
    assert off2["accuracy_src"] == pytest.approx(res2["source_accuracy"], abs=1e-9)


def test_evaluate_2026_oracle_labels_leaves_empty_mixtures_unscored(tiny_models, embedded_2026,
                                                                     tmp_path, capsys):
    _, separator = tiny_models
    out = tmp_path / "out"
    args = ["--separator", str(separator), "--oracle-labels", "--data", str(embedded_2026),
            "--batch-size", "6", "--no-progress"]  # the 6 mixtures in one batch: one compile
    # A 2026 test set has mixtures without references: not refused (no --allow-empty needed).
    assert evaluate.main(args + ["--out", str(out), "--write-wavs"]) == 0
    res = json.loads((out / "results.json").read_text())
    ts = TestSet(embedded_2026 / "synthesized" / "test")
    empty = sum(not it.references for it in ts)
    assert res["task"] == "dcase2026" and empty >= 1
    assert res["n_empty_mixtures"] == empty  # nothing estimated, nothing to find: unscored
    assert res["mixture_accuracy"] == 100.0 and res["source_accuracy"] == 100.0
    assert res["fp"] == res["fn"] == 0
    # With oracle labels every reference is a TP: the CAPI-SDRi is the oracle SDRi per mixture.
    off = evaluate_estimates(str(ts.root / "soundscape"), str(ts.root / "oracle_target"),
                             str(out / "estimates"), list(CLASSES))
    assert sum(v is None for v in off["per_mixture"].values()) == empty
    assert off["CAPI-SDRi"] == pytest.approx(res["capi_sdri"], abs=1e-4)
    # Read as DCASE 2025, the same set is refused, naming the way out.
    bad = tmp_path / "bad"
    assert evaluate.main(args + ["--out", str(bad), "--task", "dcase2025"]) == 2
    err = capsys.readouterr().err
    assert "have no reference" in err and "--task dcase2026" in err and not bad.exists()


def test_separate_2026_names_and_slots(tiny_slot_tagger, tiny_models, tmp_path):
    _, separator = tiny_models
    x = np.random.default_rng(0).standard_normal((4, 16000)).astype(np.float32) * 0.1
    wav.write(tmp_path / "scene.wav", x)
    out = tmp_path / "out"
    assert separate.main(["--tagger", str(tiny_slot_tagger), "--separator", str(separator),
                          str(tmp_path / "scene.wav"), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "scene.json", "scene_0_VacuumCleaner.wav", "scene_1_VacuumCleaner.wav"]
    info = json.loads((out / "scene.json").read_text())
    assert info["task"] == "dcase2026" and info["labels"] == ["VacuumCleaner"] * 2
    assert [s["label"] for s in info["slots"]] == ["VacuumCleaner"] * 2 + ["silence"]
    assert all(s["probability"] > 0.99 for s in info["slots"])
    sub = tmp_path / "sub_tagged"
    assert separate.main(["--tagger", str(tiny_slot_tagger), "--separator", str(separator),
                          str(tmp_path / "scene.wav"), "--out", str(sub), "--submission"]) == 0
    listing = json.loads((sub / "eval_results.json").read_text())["probabilities"]
    assert [e["filename"] for e in listing[0]["estimate"]] == [
        "scene_0_VacuumCleaner.wav", "scene_1_VacuumCleaner.wav"]
    assert all(e["probability"] > 0.99 for e in listing[0]["estimate"])
    verify_json(str(sub / "eval_results.json"), str(sub / "eval_out"))
    # Given labels, no tagger: the edition is --task; 2026 names, 16-bit PCM.
    sub = tmp_path / "sub"
    assert separate.main(["--separator", str(separator), str(tmp_path / "scene.wav"), "--out",
                          str(sub), "--labels", "Dishes,Speech,Dishes", "--submission",
                          "--task", "dcase2026"]) == 0
    assert sorted(p.name for p in sub.iterdir()) == ["eval_out", "eval_results.json"]
    names = sorted(p.name for p in (sub / "eval_out").iterdir())
    assert names == ["scene_0_Dishes.wav", "scene_1_Speech.wav", "scene_2_Dishes.wav"]
    assert all(sf.info(str(sub / "eval_out" / n)).subtype == "PCM_16" for n in names)
    listing = json.loads((sub / "eval_results.json").read_text())["probabilities"]
    assert listing == [{"soundscape": "scene", "estimate": [
        {"filename": n, "label": n[8:-4], "probability": 1.0}
        for n in ("scene_0_Dishes.wav", "scene_1_Speech.wav", "scene_2_Dishes.wav")]}]
    verify_json(str(sub / "eval_results.json"), str(sub / "eval_out"))


def test_separate_2026_submission_in_parts_stays_consistent(tiny_models, tmp_path, capsys):
    """Two runs into one submission folder (--overwrite): eval_results.json lists the wavs of
    both, as the official verify_json requires; a stale estimate of a re-separated input is
    refused rather than left unlisted."""
    _, separator = tiny_models
    x = np.random.default_rng(0).standard_normal((4, 16000)).astype(np.float32) * 0.1
    for n in ("a", "b"):
        wav.write(tmp_path / f"{n}.wav", x)
    sub = tmp_path / "sub"

    def run(name, labels):
        return separate.main(["--separator", str(separator), str(tmp_path / f"{name}.wav"),
                              "--out", str(sub), "--labels", labels, "--submission", "--task",
                              "dcase2026", "--overwrite"])

    assert run("a", "Dishes") == 0 and run("b", "Speech,Cough") == 0
    verify_json(str(sub / "eval_results.json"), str(sub / "eval_out"))
    assert run("a", "Dishes") == 0  # the same outputs again: a's entry replaced, b's kept
    listing = json.loads((sub / "eval_results.json").read_text())["probabilities"]
    assert sorted(m["soundscape"] for m in listing) == ["a", "b"]
    verify_json(str(sub / "eval_results.json"), str(sub / "eval_out"))
    before = {p.name: p.read_bytes() for p in (sub / "eval_out").iterdir()}
    assert run("b", "Speech") == 2  # b_1_Cough.wav would stay, unlisted
    assert "b_1_Cough.wav: an earlier estimate of an input of this run" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in (sub / "eval_out").iterdir()} == before
    (sub / "eval_results.json").write_text("[]")
    assert run("a", "Dishes") == 2
    assert "not an eval_results.json" in capsys.readouterr().err


def test_a_model_dir_exported_by_a_2026_run_keeps_its_edition_when_moved(tiny_models,
                                                                          tmp_path, capsys):
    """Training writes run.json into model/; a copy of that folder alone still separates with
    the 2026 names, and replacing it (--overwrite) treats run.json as part of it."""
    import shutil

    from s5jax import modeldir
    from s5jax.inference.loading import trained_task

    _, separator = tiny_models
    cfg, variables = modeldir.load_model(separator)
    run = {"task": "dcase2026", "step": 7}
    moved = modeldir.save_model(tmp_path / "exported", cfg, variables, run=run)
    assert modeldir.read_run(moved) == run
    assert modeldir.not_a_model_dir(moved) is None  # so --overwrite may replace it
    assert trained_task(moved) == "dcase2026"
    elsewhere = tmp_path / "elsewhere" / "sep"
    shutil.copytree(moved, elsewhere)
    x = np.random.default_rng(0).standard_normal((4, 16000)).astype(np.float32) * 0.1
    wav.write(tmp_path / "scene.wav", x)
    out = tmp_path / "out"
    assert separate.main(["--separator", str(elsewhere), str(tmp_path / "scene.wav"),
                          "--out", str(out), "--labels", "Dishes"]) == 0
    assert "was trained for it" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["scene.json", "scene_0_Dishes.wav"]
    # A damaged run.json is named, not taken for 2025.
    for text, msg in (("[1, 2]", "expected a JSON object"), ('{"task": null}', "'task' is None"),
                      ('{"task": "dcase2026", "step": "7"}', "'step' is '7'"),
                      ("{", "invalid JSON")):
        (elsewhere / "run.json").write_text(text)
        with pytest.raises(ValueError, match=f"run.json: {re.escape(msg)}"):
            trained_task(elsewhere)


def test_a_separator_trained_for_2026_names_its_outputs_the_2026_way(tiny_models, tmp_path,
                                                                       capsys):
    """Without --task and without a slot tagger, the edition comes from the separator's training
    run (its exported model/ or its work directory), not the 2025 default."""
    import shutil

    import ml_collections

    from s5jax.inference.loading import trained_task
    from s5jax.training import checkpoint

    _, separator = tiny_models
    run = tmp_path / "run"
    shutil.copytree(separator, run / "model")
    (run / "checkpoints").mkdir()
    checkpoint.write_train_config(run, ml_collections.ConfigDict({"task": "dcase2026"}))
    assert trained_task(run) == trained_task(run / "model") == "dcase2026"
    assert trained_task(separator) is None  # a model directory of its own
    x = np.random.default_rng(0).standard_normal((4, 16000)).astype(np.float32) * 0.1
    wav.write(tmp_path / "scene.wav", x)
    out = tmp_path / "out"
    assert separate.main(["--separator", str(run / "model"), str(tmp_path / "scene.wav"),
                          "--out", str(out), "--labels", "Dishes,Dishes"]) == 0
    assert "was trained for it" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [
        "scene.json", "scene_0_Dishes.wav", "scene_1_Dishes.wav"]
