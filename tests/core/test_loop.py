"""The active-learning loop (job type ``loop-round``, ``lesion-diffkd loop``) on 16 labelled
+ 32 unlabelled real PH2 images with tiny models: a round cancelled by SIGTERM mid-way
leaves a consistent store and resumes to the end through the CLI; the next round, run by
``loop --worker``, fine-tunes the first round's models and queues what is still
unlabelled. Plus the v2 -> v3 migration, the settings check and the queue order."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest

from napari_lesion_diffkd.cli import main
from napari_lesion_diffkd.core.active_learning.loop import LoopSettings, queue_order
from napari_lesion_diffkd.core.job_runner import (
    PROCESS_LOG,
    cancel_job,
    job_dir,
    start_job_process,
)
from napari_lesion_diffkd.core.store import InvalidInputError, ProjectStore, import_folder
from napari_lesion_diffkd.core.store.files import sha256_file
from napari_lesion_diffkd.core.store.schema import SCHEMA_VERSION
from napari_lesion_diffkd.core.active_learning.rounds import (
    annotation_queue,
    loop_round_of,
    loop_rounds,
    start_round,
)
from tests.core.store.old_projects import old_database

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FIXTURES = Path(__file__).parents[1] / "fixtures"
LABELLED, UNLABELLED = 16, 32
THRESHOLD = 0.04  # splits the tiny teacher's sample_disagreement scores (0.03 to 0.12)
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def ph2_48(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Path:
    """The first 48 PH2 images (symlinks), masks for the first 16 only."""
    src = data_root / "ph2_dermoscopy"
    folder = tmp_path_factory.mktemp("ph2_48")
    (folder / "images").mkdir()
    (folder / "masks").mkdir()
    images = sorted((src / "images").iterdir())[:LABELLED + UNLABELLED]
    for i, image in enumerate(images):
        (folder / "images" / image.name).symlink_to(image)
        if i < LABELLED:
            (folder / "masks" / f"{image.stem}.png").symlink_to(src / "masks" / f"{image.stem}.png")
    (folder / "metadata.csv").write_text("id,group\n" + "".join(f"{p.stem},{p.stem}\n"
                                                                 for p in images))
    return folder


def loop_config(tiny_bundle: Path, **extra) -> dict:
    """Tiny teacher (fine-tuned from the tiny PH2 bundle, 4 steps) and tiny trajectory
    student (6 steps), K = 3, one thread."""
    return {"teacher": str(tiny_bundle),
            "teacher_overrides": {"max_steps": 4, "val_every": 4, "checkpoint_every": 2},
            "student_config": str(FIXTURES / "tiny_student.yaml"),
            "student_overrides": {"max_steps": 6, "val_every": 6, "checkpoint_every": 3},
            "num_samples": 3, "threshold": THRESHOLD, "strategy": "uncertainty",
            "device": "cpu", "threads": 1, **extra}


def pseudo_of(store: ProjectStore, job_id: int) -> list:
    return [v for v in store.label_versions(kind="pseudo") if v.author == f"job:{job_id}"]


def wait_for_pseudo_labels(store: ProjectStore, job_id: int, proc, count: int) -> None:
    deadline = time.monotonic() + 120
    while len(pseudo_of(store, job_id)) < count:
        if proc.poll() is not None or time.monotonic() > deadline:
            log = (job_dir(store.root, job_id) / PROCESS_LOG).read_text()
            pytest.fail(f"the round ended or hung before pseudo-labelling:\n{log}")
        time.sleep(0.05)


def scores_of(store: ProjectStore, settings_key: str) -> dict[int, float]:
    return {p.image_id: p.scores["sample_disagreement"]
            for p in store.predictions(settings_key=settings_key)}


def test_a_cancelled_round_resumes_then_the_next_round_runs_in_the_worker(
        tmp_path: Path, ph2_48: Path, tiny_bundle: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # for the job processes the CLI starts
    project = ProjectStore.create(tmp_path / "project")
    import_folder(project, ph2_48, modality="dermoscopy")
    humans = {v.id: (v.file, v.sha256) for v in project.label_versions(kind="human")}
    assert len(humans) == LABELLED and len(project.unlabelled_images()) == UNLABELLED

    # 1. Round 1 in its own process, cancelled (SIGTERM) while it pseudo-labels.
    job = project.jobs.submit("loop-round", loop_config(tiny_bundle))
    proc = start_job_process(project.root, job.id, env=ONE_THREAD)
    wait_for_pseudo_labels(project, job.id, proc, 3)
    row = cancel_job(project.root, job.id, grace_s=30, process=proc)
    assert proc.wait(timeout=30) == 3 and row.status == "cancelled" and row.resumable
    cut = len(pseudo_of(project, job.id))
    assert 3 <= cut < UNLABELLED
    assert project.check().ok
    rnd = loop_round_of(project, job.id)
    assert rnd.round == 1 and list(rnd.steps) == ["teacher"] and rnd.finished_at is None
    assert [m.tag for m in project.models()] == ["tiny-dermoscopy@v1"]
    assert annotation_queue(project) == []  # no half queue

    # 2. `loop` resumes it (teacher skipped, finished images reused) and ends it.
    assert main(["loop", "--project", str(project.root), "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert f"resuming loop-round job {job.id}" in out
    assert "1/5 teacher: done by an earlier attempt" in out
    row = project.jobs.get(job.id)
    assert row.status == "done" and row.attempts == 2, row.log
    result, steps = row.result, row.result["steps"]
    assert json.loads(out.strip().splitlines()[-1])["result"]["round"] == 1
    assert (result["teacher"], result["student"]) == (
        "tiny-dermoscopy@v1", "tiny-dermoscopy-student@v1")
    assert [(m.tag, m.role, m.job_id) for m in project.models()] == [
        ("tiny-dermoscopy@v1", "teacher", job.id),
        ("tiny-dermoscopy-student@v1", "student", job.id)]
    assert steps["pseudo-label"]["reused"] >= cut
    assert steps["pseudo-label"]["predicted"] + steps["pseudo-label"]["reused"] == UNLABELLED

    # Pseudo labels: one per unlabelled image, none on a labelled one; humans untouched.
    unlabelled = {i.id for i in project.unlabelled_images()}
    pseudo = pseudo_of(project, job.id)
    assert sorted(v.image_id for v in pseudo) == sorted(unlabelled)
    assert all(project.current_label(v.image_id).id == v.id for v in pseudo)
    assert {v.id: (v.file, v.sha256) for v in project.label_versions(kind="human")} == humans
    assert all(sha256_file(f) == digest for f, digest in humans.values())

    # Confident = teacher score <= threshold; they (and only they) join the student's data.
    teacher_scores = scores_of(project, steps["pseudo-label"]["settings_key"])
    confident = {i for i, s in teacher_scores.items() if s <= THRESHOLD}
    assert result["confident"] == len(confident) and 0 < len(confident) < UNLABELLED
    assert result["teacher_only"] == UNLABELLED - len(confident)
    data = job_dir(project.root, job.id) / "student" / "data" / "masks"
    human_images = {v.image_id for v in project.label_versions(kind="human")}
    assert {p.stem for p in data.iterdir()} == {project.image(i).name
                                               for i in confident | human_images}
    assert steps["student"]["pseudo_labels"] == len(confident)

    # The queue: every unlabelled image, by descending student score.
    queue = annotation_queue(project)
    assert sorted(e.image_id for e in queue) == sorted(unlabelled)
    student_scores = scores_of(project, steps["score"]["settings_key"])
    assert [e.score for e in queue] == pytest.approx([student_scores[e.image_id]
                                                      for e in queue])
    assert [e.score for e in queue] == sorted((e.score for e in queue), reverse=True)
    assert result["queue_top"] == [e.image_name for e in queue[:10]]
    assert project.check().ok

    # 3. The annotator labels the top image; round 2 (diverse batches) and a bad job go
    # through the worker, in order.
    top = queue[0]
    project.save_label(top.image_id, project.read_label(project.current_label(top.image_id)),
                       kind="human", author="annotator")
    second = project.jobs.submit("loop-round", loop_config(  # K = 2: a quicker round
        tiny_bundle, strategy="uncertainty-diversity", batch_size=4, num_samples=2))
    bad = project.jobs.submit("predict", {"model": "no-such-model", "device": "cpu"})
    assert main(["loop", "--worker", "--project", str(project.root)]) == 1  # one failed
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert lines[-1] == {"jobs": 2, "done": 1, "failed": 1, "cancelled": 0}
    row2, bad_row = project.jobs.get(second.id), project.jobs.get(bad.id)
    assert row2.status == "done" and bad_row.status == "failed", row2.log
    assert bad_row.started_at >= row2.finished_at
    result2 = row2.result
    assert result2["round"] == 2 and result2["teacher"] == "tiny-dermoscopy@v2"
    assert result2["steps"]["teacher"]["init"] == str(project.find_model(
        "tiny-dermoscopy@v1").path)
    assert result2["steps"]["student"]["init"] == str(project.find_model(
        "tiny-dermoscopy-student@v1").path)
    assert result2["steps"]["student"]["human_labels"] == LABELLED + 1
    queue2 = annotation_queue(project)
    assert {e.round for e in queue2} == {2} and len(queue2) == UNLABELLED - 1
    assert sorted(e.image_id for e in queue2) == sorted(unlabelled - {top.image_id})
    assert queue2[0].score == max(e.score for e in queue2)  # k-centre starts at the top
    assert [r.round for r in loop_rounds(project)] == [1, 2]
    assert len(annotation_queue(project, 1)) == UNLABELLED  # round 1's queue is kept
    assert [e.image_id for e in annotation_queue(project, 1, unlabelled_only=True)] == [
        e.image_id for e in queue[1:]]
    assert project.check().ok
    project.close()


def test_migration_from_v2_adds_the_loop_tables(tmp_path: Path, ph2_48: Path) -> None:
    folder = tmp_path / "old"
    # a project written before the loop existed
    conn = old_database(folder, 2, ph2_48 / "images")
    conn.execute("INSERT INTO jobs (type, config, status, created_at) "
                 "VALUES ('predict', '{}', 'done', 't')")
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "loop_rounds" not in tables and "annotation_queue" not in tables
    conn.close()

    with ProjectStore(folder) as store:
        assert store.schema_version == SCHEMA_VERSION  # every later migration runs too
        assert store.image("a").shape == (383, 512) and store.jobs.get(1).status == "done"
        job = store.jobs.submit("loop-round", {})
        assert start_round(store, job.id, "random").round == 1
        assert start_round(store, job.id, "random").round == 1  # a re-run keeps its number
        with pytest.raises(sqlite3.IntegrityError):  # the queue points at real images
            store.conn.execute("INSERT INTO annotation_queue VALUES (1, 0, 999, NULL)")
        assert annotation_queue(store) == []
        assert store.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_settings_are_checked_before_anything_runs(tmp_path: Path) -> None:
    assert LoopSettings.from_config({}) == LoopSettings()
    assert LoopSettings.from_config({"threshold": "0.2", "device": "cpu"}).threshold == 0.2
    for bad, match in [({"treshold": 0.1}, "unknown config keys"),
                       ({"strategy": "greedy"}, "unknown strategy"),
                       ({"score_key": "dice"}, "unknown score_key"),
                       ({"threshold": -1}, "threshold"),
                       ({"pseudo_label": {"k": 3}}, "pseudo_label keys"),
                       ({"batch_size": "many"}, "bad value")]:
        with pytest.raises(InvalidInputError, match=match):
            LoopSettings.from_config(bad)
    with ProjectStore.create(tmp_path / "p") as store:
        root = str(store.root)
        assert main(["loop", "--project", root, "--strategy", "greedy"]) == 2
        assert main(["loop", "--project", str(tmp_path / "missing")]) == 2
        assert store.jobs.list() == []  # nothing was queued
        # --new passes over an unfinished round (it would be resumed otherwise).
        failed = store.jobs.mark_ended(store.jobs.submit("loop-round", {}).id, "failed", "x")
        assert main(["loop", "--project", root, "--new", "--strategy", "greedy"]) == 2
        assert [j.id for j in store.jobs.list()] == [failed.id]


def test_queue_order_places_every_image_once() -> None:
    rng = np.random.default_rng(0)
    scores = np.array([0.1, 0.5, 0.3, 0.5, 0.0, 0.9, 0.2])
    assert queue_order("uncertainty", scores, None, 3, rng) == [5, 1, 3, 2, 6, 0, 4]
    random_order = queue_order("random", scores, None, 3, rng)
    assert sorted(random_order) == list(range(7))
    # Two tight clusters: each diverse batch of 2 takes one image from each.
    embeddings = np.array([[0, 0], [0, 0.1], [5, 5], [5, 5.1], [0, 0.2], [5, 5.2], [0, 0.3]],
                          dtype=np.float32)
    order = queue_order("uncertainty-diversity", scores, embeddings, 2, rng)
    assert sorted(order) == list(range(7)) and order[0] == 5
    assert (embeddings[order[1]][0] < 1) != (embeddings[order[0]][0] < 1)
