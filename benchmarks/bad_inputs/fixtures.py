"""The survey's fixtures, built once in a temporary directory: prompt files, plans, model
directories and a store of runs (good ones and broken ones)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from benchmarks.bad_inputs.harness import TINY, Env, headlab

# --- fixtures: one function per kind -------------------------------------------------------


def prompt_files(fx: Path) -> None:
    d = fx / "prompts"
    d.mkdir(parents=True)
    ok = '{"id": "a", "text": "the cat sat on the mat"}\n'
    for name, text in {
        "malformed3.jsonl": ok + '{"id": "b", "text": "x"}\n{"id": "c", "text": \n',
        "list.jsonl": '["the", "cat"]\n', "scalar.jsonl": '"just a string"\n',
        "notext.jsonl": '{"id": "a", "body": "x"}\n', "textnum.jsonl": '{"id": "a", "text": 4}\n',
        "empty_text.jsonl": '{"id": "a", "text": ""}\n',
        "blank_text.jsonl": '{"id": "a", "text": "   \\n "}\n', "dup_ids.jsonl": ok + ok,
        "dup_ids_types.jsonl": '{"id": 5, "text": "a b"}\n{"id": "5", "text": "c d"}\n',
        "id_object.jsonl": '{"id": {"x": 1}, "text": "a b"}\n',
        "surrogate.jsonl": '{"id": "a", "text": "bad \\ud800 here"}\n',
        "trailing.jsonl": '{"id": "a", "text": "a b"} trailing\n', "empty.jsonl": "",
        "blank_lines.jsonl": "\n\n   \n",
        "toolong.jsonl": json.dumps({"id": "toolong", "text": "the cat " * 1500}) + "\n",
        "huge20mb.jsonl": json.dumps({"id": "huge", "text": "cat " * 5_000_000}) + "\n",
        "big.jsonl": "".join(json.dumps({"id": str(i), "text": "the cat sat on a mat " * 70})
                             + "\n" for i in range(64)),  # ~7 s of scanning: the signal cases
    }.items():  # fmt: skip
        (d / name).write_text(text, encoding="utf-8")
    (d / "binary.jsonl").write_bytes(os.urandom(8192))
    (d / "latin1.jsonl").write_bytes(b'{"id": "a", "text": "caf\xe9"}\n')
    (d / "adir").mkdir()
    (d / "loop.jsonl").symlink_to(d / "loop.jsonl")
    (d / "dangling.jsonl").symlink_to(d / "nowhere.jsonl")


def plan(
    top: str = "",
    body: str = '[single_head]\nmodes = ["zero"]\n',
    tasks: str = "[tasks.lm]\nn_prompts = 2\n",
    model: str = '"tiny-random"',
) -> str:
    return f'model = {model}\nname = "p"\n{top}\n{tasks}\n{body}'


def top_k(extra: str = "k = [1]", metric: str = "alpha") -> str:
    return f'[[top_k]]\nmetric = "{metric}"\nprobe = "sink"\nposition = 0\n{extra}\n'


def strength(kind: str = "scale", values: str = "[0.5]", heads: str = "[[0, 0]]") -> str:
    return f'[[strength]]\nkind = "{kind}"\nvalues = {values}\nheads = {heads}\n'


SINGLE = '[single_head]\nmodes = ["zero"]\n'
PLANS = {  # name: TOML text; the plans marked * rank heads by run `base` of the store
    "invalid_toml": 'model = "tiny-random"\n[single_head\nmodes = ["zero"]\n',
    "unknown_key": plan(top='colour = "red"'),
    "unknown_single_key": plan(body=SINGLE + "layer = [0]\n"),
    "single_head_string": plan(top='single_head = "zero"', body=""),
    "layer99": plan(body=SINGLE + "layers = [99]\n"),
    "layer_negative": plan(body=SINGLE + "layers = [-1]\n"),
    "layers_str": plan(body=SINGLE + 'layers = ["a"]\n'),
    "*k_too_big": plan(body=top_k("k = [100]")), "*k_zero": plan(body=top_k("k = [0]")),
    "k_missing": plan(body=top_k("")), "k_string": plan(body=top_k('k = "many"')),
    "*topk_metric_unknown": plan(body=top_k(metric="nosuch")),
    "*topk_mode_unknown": plan(body=top_k('k = [1]\nmode = "bogus"')),
    "topk_no_metrics_run": plan(body=top_k()),
    "unknown_task": plan(tasks="[tasks.nosuch]\n"),
    "unknown_task_param": plan(tasks="[tasks.lm]\nfoo = 1\n"),
    "task_zero_prompts": plan(tasks="[tasks.lm]\nn_prompts = 0\n"),
    "task_param_type": plan(tasks='[tasks.lm]\nn_prompts = "many"\n'),
    "tasks_empty": plan(top="tasks = {}", tasks=""),
    "tasks_string": plan(top='tasks = "lm"', tasks=""),
    "ioi_path_missing": plan(tasks='[tasks.ioi]\npath = "/nonexistent/pairs.jsonl"\n'),
    "mode_unknown": plan(body='[single_head]\nmodes = ["bogus"]\n'),
    "modes_empty": plan(body="[single_head]\nmodes = []\n"),
    "modes_twice": plan(body='[single_head]\nmodes = ["zero", "zero"]\n'),
    "strength_negative_softpag": plan(body=strength("softpag", "[-0.5]")),
    "strength_negative_act": plan(body=strength("act", "[-0.4]")),
    "strength_negative_keep": plan(body=strength("redistribute", "[-0.5]")),
    "strength_keep_above_1": plan(body=strength("redistribute", "[1.5]")),
    "strength_head_range": plan(body=strength(heads="[[9, 9]]")),
    "strength_heads_string": plan(body=strength(heads='"0.0"')),
    "strength_kind_unknown": plan(body=strength("boost")),
    "strength_values_str": plan(body=strength(values='["a"]')),
    "strength_values_empty": plan(body=strength(values="[]")),
    "*strength_both": plan(body=strength() + 'top = { metric = "alpha", k = 1 }\n'),
    "batch_zero": plan(top="batch_size = 0"), "batch_string": plan(top='batch_size = "x"'),
    "copies_zero": plan(top="copies = 0"), "copies_negative": plan(top="copies = -1"),
    "model_unknown": plan(model='"nosuch-model"'), "model_int": plan(model="5"),
    "name_traversal": plan().replace('"p"', '"../../escaped"'),
    "name_slash": plan().replace('"p"', '"a/b"'), "name_empty": plan().replace('"p"', '""'),
    "attribution_unknown": plan(top='attribution = ["bogus"]'),
    "attribution_niah": plan(top='attribution = ["zero"]', tasks="[tasks.niah]\n", body=""),
    "nothing_to_do": plan(body=""),
}  # fmt: skip
CONC_PLAN = (  # 16 units, ~5 s: long enough to interrupt
    'model = "tiny-random"\nname = "conc"\ncopies = 1\nbatch_size = 4\n'
    '[tasks.lm]\nn_prompts = 16\n[single_head]\nmodes = ["zero", "uniform"]\n'
)


def plan_files(fx: Path) -> None:
    d = fx / "plans"
    d.mkdir()
    for name, text in {**PLANS, "conc": CONC_PLAN}.items():
        (d / f"{name.lstrip('*')}.toml").write_text(text)
    (d / "binary.toml").write_bytes(os.urandom(2048))
    (d / "adir.toml").mkdir()


def model_dirs(fx: Path) -> None:
    from probes.models.tiny import tiny_llama

    d, model, tokenizer = fx / "models", *tiny_llama()
    model.save_pretrained(d / "real")
    tokenizer.save_pretrained(d / "real")
    weights = (d / "real" / "model.safetensors").read_bytes()
    config = json.loads((d / "real" / "config.json").read_text())

    def variant(name: str, drop: tuple[str, ...] = (), **files: bytes) -> None:
        shutil.copytree(d / "real", d / name)
        for gone in drop:
            (d / name / gone).unlink(missing_ok=True)
        for file, data in files.items():
            (d / name / file.replace("__", ".")).write_bytes(data)

    (d / "empty").mkdir()
    variant("random_weights", model__safetensors=os.urandom(len(weights)))
    variant("truncated_weights", model__safetensors=weights[: len(weights) // 2])
    variant("bad_config", config__json=b"{not json")
    variant("no_weights", drop=("model.safetensors",))
    variant("pickle_only", drop=("model.safetensors",), pytorch_model__bin=os.urandom(4096))
    variant("unknown_type", config__json=json.dumps({**config, "model_type": "nosuch"}).encode())
    variant("wrong_shape", config__json=json.dumps({**config, "hidden_size": 64}).encode())
    variant("no_tokenizer", drop=("tokenizer.json", "tokenizer_config.json"))
    (d / "afile").write_text("not a model\n")


def write_parquet(path: Path, metadata: dict | None = None, table=None) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"a": [1, 2], "b": ["x", "y"]}) if table is None else table
    pq.write_table(table.replace_schema_metadata(metadata), path)


def stored_runs(env: Env) -> None:
    """Good tiny runs `base` (sink) and `rbase` (retrieval) in `store`, and broken copies."""
    import pyarrow.parquet as pq

    for run_id, probes in (("base", ["sink,attention_stats"]), ("rbase", [
            "retrieval", "--param", "retrieval.lengths=128", "--param", "retrieval.depths=0,50",
            "--param", "retrieval.max_new_tokens=8"])):  # fmt: skip
        made = headlab(env, ["scan", *TINY, "--quiet", "--data", str(env.store), "--run-id",
                             run_id, "--probes", *probes])  # fmt: skip
        assert made.rc == 0, made.err
    runs, outside, res = env.store / "runs", env.root / "outside", "results.parquet"
    shutil.copytree(runs / "base", outside / "base")

    def copy(name: str, source: str = "base") -> Path:
        shutil.copytree(runs / source, runs / name)
        return runs / name

    data = (runs / "base" / res).read_bytes()
    (copy("truncated") / res).write_bytes(data[: len(data) // 2])
    rdata = (runs / "rbase" / res).read_bytes()
    (copy("rtruncated", "rbase") / res).write_bytes(rdata[: len(rdata) // 2])
    (copy("garbage") / res).write_bytes(os.urandom(len(data)))
    (copy("no_manifest") / "manifest.json").unlink()
    (copy("bad_manifest") / "manifest.json").write_text("{oops")
    (copy("list_manifest") / "manifest.json").write_text("[1, 2]")
    write_parquet(copy("foreign") / res)
    write_parquet(
        copy("schema_v1") / res, {b"headlab.schema": b"1"}, pq.read_table(runs / "base" / res)
    )
    (copy("no_tables") / res).unlink()
    write_parquet(copy("foreign_sweep") / "sweep-x.parquet")
    (copy("results_link") / res).unlink()
    (runs / "results_link" / res).symlink_to(outside / "base" / res)
    (copy("manifest_link") / "manifest.json").unlink()
    (runs / "manifest_link" / "manifest.json").symlink_to(outside / "base" / "manifest.json")
    (runs / "dir_link").symlink_to(outside / "base")
    for name in ("foreign_part", "garbage_part"):  # an unfinished sweep with a bad part
        (copy(name) / "sweep-conc.parts").mkdir()
        part = runs / name / "sweep-conc.parts" / "part-0000.parquet"
        if name == "foreign_part":
            write_parquet(part)
        else:
            part.write_bytes(os.urandom(4096))
    (env.root / "afile").write_text("a file where a directory is expected\n")
    (env.root / "runs_file").mkdir()
    (env.root / "runs_file" / "runs").write_text("not a directory\n")  # fmt: skip
