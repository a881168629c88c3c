"""Starting from pretrained weights: strict by name except heads (new ones initialised and
listed, unused ones dropped and listed), from a qkv run (``--init-from``) or a Hugging Face
directory (``--init-from-hf``)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import qkv.models as M
from qkv.cli import main
from qkv.interop import from_hf
from qkv.tasks import TaskOptions, build_trainer, get_task
from qkv.training import TrainConfig
from qkv.training.finetune import HEAD_PREFIXES, init_from_state
from qkv.training.trainer import build_optimizer

T = pytest.importorskip("transformers")
TINY = {"d_model": 16, "n_heads": 2, "d_ff": 32, "n_encoder_layers": 1, "n_decoder_layers": 1}


def _bert_dir(kit):
    cfg = T.BertConfig(
        vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=48, max_position_embeddings=40, type_vocab_size=2,
    )  # fmt: skip
    return kit.save(T.BertForPreTraining(cfg))  # pooler and MLM head (and NSP, not read)


def test_a_classifier_on_a_pretrained_encoder_loads_the_body_and_lists_its_head(kit):
    pretrained = from_hf(_bert_dir(kit))
    assert pretrained.mlm_head is not None and pretrained.pooler is not None
    cfg = dataclasses.replace(pretrained.config, n_classes=5, mlm_head=False)
    torch.manual_seed(0)
    model = M.build(cfg)
    report = init_from_state(model, pretrained.state_dict())
    assert sorted(report.new) == ["classifier.bias", "classifier.weight"]
    assert report.dropped and all(n.startswith("mlm_head.") for n in report.dropped)
    own, src = model.state_dict(), pretrained.state_dict()
    for name in report.loaded:
        assert torch.equal(own[name], src[name]), name
    assert "pooler.dense.weight" in report.loaded and "classifier.weight" not in report.loaded
    assert "initialised 2 new: classifier.bias, classifier.weight" in report.summary()


def test_body_mismatches_are_refused_by_name():
    a = M.build(M.EncoderConfig(d_model=16, n_heads=2, d_ff=32, n_layers=1, vocab_size=30))
    b = M.build(M.EncoderConfig(d_model=16, n_heads=2, d_ff=32, n_layers=2, vocab_size=40))
    with pytest.raises(ValueError) as e:
        init_from_state(a, b.state_dict())
    msg = str(e.value)
    assert "embed.tok_emb.weight: pretrained (40, 16) vs model (30, 16)" in msg
    assert "unexpected encoder.layers.1." in msg and "more" in msg


def test_init_from_a_qkv_run_starts_from_its_weights(tmp_path):
    options = TaskOptions(n_train=64, n_valid=8, n_test=8, max_len=4)
    cfg = TrainConfig(steps=2, batch_size=8, progress=False, eval_limit=4)
    first = build_trainer(get_task("copy", options), cfg, tmp_path / "a", model_overrides=TINY)
    first.fit()
    second = build_trainer(get_task("copy", options), cfg, tmp_path / "b", init_from=tmp_path / "a")
    assert second.init_report.new == [] and second.init_report.dropped == []
    a, b = first.model.state_dict(), second.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert second.model.config.d_model == 16  # the architecture is the pretrained one


# 14 s: builds and saves a pretrained model first
@pytest.mark.slow
def test_cli_init_from_hf_with_another_vocabulary_is_one_clear_error(kit, tmp_path, capsys):
    directory = _bert_dir(kit)
    capsys.readouterr()
    code = main(["train", "--task", "listops", "--init-from-hf", str(directory),
                 "--out", str(tmp_path / "run"), "--steps", "1"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("qkv: error:") and "\n" not in err
    assert "embed.tok_emb.weight: pretrained (60, 32) vs model" in err


def test_head_lr_scale_multiplies_the_heads_learning_rate_only():
    model = M.build(M.EncoderConfig(d_model=16, n_heads=2, d_ff=32, n_layers=1, vocab_size=30,
                                    max_len=8, n_classes=3))  # fmt: skip
    plain = build_optimizer(model, TrainConfig(lr=1e-3, optimizer="adamw"))
    assert [g["lr_scale"] for g in plain.param_groups] == [1.0, 1.0]  # decay, no decay
    opt = build_optimizer(model, TrainConfig(lr=1e-3, optimizer="adamw", head_lr_scale=10.0))
    head = {id(p) for n, p in model.named_parameters() if n.startswith(HEAD_PREFIXES)}
    # the classifier's, the pooler's and the MLM head's (BERT's defaults) but not the
    # embedding the MLM decoder shares
    assert len(head) == 9 and id(model.embed.tok_emb.weight) not in head
    assert [g["lr_scale"] for g in opt.param_groups] == [1.0, 1.0, 10.0, 10.0]
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    assert {id(p) for g in opt.param_groups if g["lr_scale"] == 10.0 for p in g["params"]} == head
    with pytest.raises(ValueError, match="head_lr_scale"):
        TrainConfig(head_lr_scale=0.0)


def test_a_step_sets_each_groups_lr_from_the_schedule_times_its_scale(tmp_path):
    task = get_task("classify", TaskOptions(data=str(_tsv(tmp_path)), n_valid=4, n_test=4,
                                            tokenizer="word", vocab_size=50))  # fmt: skip
    cfg = TrainConfig(steps=1, batch_size=4, lr=1e-3, head_lr_scale=10.0, warmup=0,
                      schedule="constant", progress=False)  # fmt: skip
    trainer = build_trainer(task, cfg, None, model_overrides={"d_model": 16, "d_ff": 32,
                                                              "n_heads": 2, "n_layers": 1})  # fmt: skip
    trainer.train_step()
    lrs = sorted({g["lr"] for g in trainer.optimizer.param_groups})
    assert lrs == pytest.approx([1e-3, 1e-2])


def _tsv(tmp_path):
    lines = [f"{'ab'[i % 2]}\t{'net tcp' if i % 2 else 'game chess'} {i}" for i in range(24)]
    p = tmp_path / "t.tsv"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


def test_lr_scale_gives_named_modules_their_own_rate_the_longest_name_winning():
    model = M.build(M.EncoderConfig(d_model=16, n_heads=2, d_ff=32, n_layers=2, vocab_size=30,
                                    max_len=8, n_classes=3))  # fmt: skip
    cfg = TrainConfig(lr=1e-3, optimizer="adam", head_lr_scale=10.0,
                      lr_scale="encoder=0.1, encoder.layers.1=0.5,classifier=3")  # fmt: skip
    opt = build_optimizer(model, cfg)
    names = {id(p): n for n, p in model.named_parameters()}
    got = {names[id(p)]: g["lr_scale"] for g in opt.param_groups for p in g["params"]}
    assert len(got) == len(names)  # every parameter once
    for n, scale in got.items():
        if n.startswith("encoder.layers.1."):
            want = 0.5
        elif n.startswith("encoder."):
            want = 0.1
        elif n.startswith("classifier."):
            want = 3.0  # the named scale wins over the head's
        elif n.startswith(HEAD_PREFIXES):
            want = 10.0
        else:
            want = 1.0
        assert scale == want, n
    assert opt.param_groups[0]["lr_scale"] == 1.0  # the body's group first, as before


@pytest.mark.parametrize(
    ("spec", "message"),
    [("vision", "'vision' is not MODULE=SCALE"), ("a=0", "lr_scale 'a' must be a finite number"),
     ("a=x", "got 'x'"), ("a=1,a=2", "'a' is given twice"), ("a=nan", "got nan")],
)  # fmt: skip
def test_lr_scale_refuses_a_malformed_spec_naming_the_part(spec, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(lr_scale=spec)


def test_lr_scale_refuses_a_name_the_model_lacks_listing_its_modules():
    model = M.build(M.EncoderConfig(d_model=16, n_heads=2, d_ff=32, n_layers=1, vocab_size=30,
                                    max_len=8, n_classes=3))  # fmt: skip
    with pytest.raises(ValueError, match="lr_scale: 'vision' is no module .* its modules: embed"):
        build_optimizer(model, TrainConfig(lr_scale="vision=0.1"))
