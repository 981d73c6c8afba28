"""The survey's cases: a table of bad commands by class, the plans, and the special cases."""

from __future__ import annotations

import shlex
import signal

from benchmarks.bad_inputs.faults import (
    concurrent,
    full_disk,
    interrupted,
    latest,
    listing,
    planted_leftovers,
)
from benchmarks.bad_inputs.fixtures import PLANS
from benchmarks.bad_inputs.harness import TINY, Case, no_doubled_rows

# --- the cases -----------------------------------------------------------------------------

PREFIX = {  # the first word of a table's command: what it stands for
    "scan": ["scan", *TINY, "--quiet", "--probes", "sink", "--data", "{data}"],
    "sweep": ["sweep", "--quiet", "--data", "{data}", *TINY],
    "sweepf": ["sweep", "--quiet", "--data", "{data}", *TINY, "--tasks", "lm",
               "--single-head", "zero"],
    "ssweep": ["sweep", "--quiet", "--data", "{store}", *TINY, "--tasks", "lm",
               "--metrics-run", "base"],
    "tsweep": ["sweep", "--quiet", "--data", "{store}", *TINY, "--tasks", "lm",
               "--metrics-run", "base", "--top-metric", "alpha", "--top-position", "0"],
    "plan": ["sweep", "--quiet", "--data", "{data}", "--plan"],
    "resume": ["sweep", "--quiet", "--data", "{store}", "--plan", "{fx}/plans/conc.toml", "--run"],
    "show": ["show", "--data", "{store}"], "runs": ["runs"], "dashboard": ["dashboard"],
    "mask": ["mask-retrieval", "--quiet", "--data", "{store}"], "prepare": ["prepare"],
    "ind": ["induction-check", *TINY, "--seeds", "1", "--n-sequences", "2", "--top-k", "2"],
    "bench": ["bench", *TINY, "--tokens", "64", "--repeats", "1", "--methods", "plain",
              "--data", "{data}"],
}  # fmt: skip
# [class], then: case name | command (shlex; later flags override the prefix's) | names | options
TABLE = """
[flags]
scan batch-size 0             | scan --batch-size 0                  | --batch-size
scan batch-size x             | scan --batch-size x                  | --batch-size
scan max-tokens 1             | scan --max-tokens 1                  | --max-tokens
scan max-tokens abc           | scan --max-tokens abc                | --max-tokens
scan device gpu0              | scan --device gpu0                   | gpu0
scan device cuda (no GPU)     | scan --device cuda                   | cuda
scan device mps               | scan --device mps                    | mps
scan path fast + divergence   | scan --path fast --probes divergence | divergence
scan path slow                | scan --path slow                     | --path
scan param without a dot      | scan --param sinkepsilon0.2          | sinkepsilon0.2
scan param unknown name       | scan --param sink.nope=1             | nope
scan param epsilon -1         | scan --param sink.epsilon=-1         | sink.epsilon
scan param epsilon abc        | scan --param sink.epsilon=abc        | sink.epsilon
scan param epsilon nan        | scan --param sink.epsilon=nan        | sink.epsilon
scan param n_positions 1.5    | scan --param sink.n_positions=1.5    | n_positions
scan param lengths a,b        | scan --probes retrieval --param retrieval.lengths=a,b  | lengths
scan lengths > n_ctx | scan --probes retrieval --param retrieval.lengths=4096 | param retrieval
scan param unselected probe   | scan --param retrieval.max_new_tokens=3 | retrieval
scan param unknown probe      | scan --param nosuch.x=1              | nosuch
scan probes unknown           | scan --probes nosuch                 | nosuch
scan probes empty             | scan --probes ''                     | --probes
scan probes twice             | scan --probes sink,sink              | sink      | either
scan model unknown name       | scan --model nosuch-model            | nosuch-model
scan model tiny-random-abc    | scan --model tiny-random-abc         | tiny-random-abc
scan model empty              | scan --model ''                      | model
scan model HF id not cached   | scan --model HuggingFaceTB/NoSuch-1M | NoSuch-1M | max=30
scan seed x                   | scan --seed x                        | --seed
scan seed 2**80               | scan --seed 1208925819614629174706176 | seed
scan run-id of an existing run | scan --data {store} --run-id base   | base
scan run-id ../escape         | scan --run-id ../escape              | ../escape
scan run-id .hidden           | scan --run-id .hidden                | .hidden
scan run-id empty             | scan --run-id ''                     | run id,--run-id
scan run-id 'latest'          | scan --run-id latest                 | latest
scan data is a file           | scan --data {root}/afile             | afile
scan data/runs is a file      | scan --data {root}/runs_file         | runs_file
scan data empty               | scan --data ''                       | --data
scan data and out             | scan --out {data}                    | --data,--out
runs out empty                | runs --out ''                        | --out
show data and out             | show latest --out {store}            | --data,--out
scan unknown flag             | scan --nope                          | --nope
no verb                       | ''
unknown verb                  | frobnicate                           | frobnicate
sweep batch-size 0            | sweepf --batch-size 0                | batch
sweep copies 0                | sweepf --copies 0                    | copies
sweep k x                     | sweepf --k x                         | --k
sweep tasks nosuch            | sweep --tasks nosuch --single-head zero | nosuch
sweep tasks empty             | sweep --tasks '' --single-head zero  | --tasks
sweep single-head bogus       | sweep --tasks lm --single-head bogus | bogus
sweep single-head empty       | sweep --tasks lm --single-head ''    | --single-head
sweep no plan at all          | sweep
sweep strength scale=abc      | sweep --tasks lm --strength scale=abc --strength-heads 0.0 | abc
sweep strength bogus kind     | sweep --tasks lm --strength bogus=1 --strength-heads 0.0   | kind
sweep strength head 9.9       | sweep --tasks lm --strength scale=1 --strength-heads 9.9   | L9H9
sweep strength heads 0.0.1    | sweep --tasks lm --strength scale=1 --strength-heads 0.0.1 | heads
sweep strength without heads  | sweep --tasks lm --strength scale=1                        | heads
sweep strength no values      | sweep --tasks lm --strength scale= --strength-heads 0.0    | values
sweep strength scale=-1 (ok) | sweep --tasks lm --strength scale=-1 --strength-heads 0.0 |  | either
sweep strength act=1.5        | sweep --tasks lm --strength act=1.5 --strength-heads 0.0   | β
sweep strength softpag=-0.1   | sweep --tasks lm --strength softpag=-0.1 --strength-heads 0.0 | u
sweep strength keep=1.5   | sweep --tasks lm --strength redistribute=1.5 --strength-heads 0.0 | 1.5
sweep top-metric, no stored run | sweep --tasks lm --top-metric alpha    | --metrics-run
sweep top-metric nosuch       | ssweep --top-metric nosuch             | nosuch
sweep top-metric ambiguous    | ssweep --top-metric alpha              | position
sweep top k 0                 | tsweep --k 0   | k=0,--k
sweep top k 100               | tsweep --k 100 | k=100,--k
sweep top-position 999        | ssweep --top-metric alpha --top-position 999       | 999
sweep top-mode bogus          | tsweep --top-mode bogus | bogus
sweep metrics-run nosuch      | tsweep --metrics-run nosuch | nosuch
sweep metrics-run truncated   | tsweep --metrics-run truncated | truncated
sweep name ../../escaped      | sweepf --name ../../escaped          | escaped
sweep run ../escaped          | sweepf --run ../escaped              | escaped
sweep run of another model | sweepf --model tiny-random-3 --run base --data {store} | random-3
sweep run truncated           | sweepf --run truncated --data {store} | truncated
sweep run without manifest    | sweepf --run no_manifest --data {store} | no_manifest
sweep device gpu0             | sweepf --device gpu0                 | gpu0
sweep device cuda             | sweepf --device cuda                 | cuda
sweep attribution bogus       | sweep --tasks lm --attribution bogus | bogus
sweep attribution on niah     | sweep --tasks niah --attribution zero | niah
sweep model unknown           | sweepf --model nosuch-model          | nosuch-model
sweep data is a file          | sweepf --data {root}/afile           | afile
sweep plan + plan flags       | plan {fx}/plans/conc.toml --tasks lm | --plan
show top 0                    | show base --top 0                    | --top
show top -1                   | show base --top -1                   | --top
show top x                    | show base --top x                    | --top
show nosuch run               | show nosuch                          | nosuch
show run ../runs/base         | show ../runs/base                    | ../runs/base
show latest, no runs          | show latest --data {data}            | runs
runs data is a file           | runs --data {root}/afile             | afile
runs data/runs is a file      | runs --data {root}/runs_file         | runs_file
dashboard port 0              | dashboard --port 0                   | --port
mask-retrieval not retrieval  | mask base                            | base
mask-retrieval ks 0           | mask rbase --ks 0                    | --ks
mask-retrieval modes bogus    | mask rbase --modes bogus             | bogus
mask-retrieval depths 200     | mask rbase --depths 200              | --depths
mask-retrieval rows-per-batch 0 | mask rbase --rows-per-batch 0      | --rows-per-batch
mask-retrieval device gpu0    | mask rbase --device gpu0             | gpu0
prepare unknown model         | prepare nosuch-model                 | nosuch-model
prepare tiny-random           | prepare tiny-random                  | tiny-random
induction-check top-k 0       | ind --top-k 0                        | --top-k
induction-check top-k 9 (8 heads) | ind --top-k 9                    | 9
induction-check n-sequences 0 | ind --n-sequences 0                  | --n-sequences
induction-check half-len 0    | ind --half-len 0                     | --half-len
induction-check half-len 200 (> context) | ind --half-len 200        | half
induction-check seeds empty   | ind --seeds ''                       | --seeds
induction-check batch-size 0  | ind --batch-size 0                   | --batch-size
induction-check model nosuch  | ind --model nosuch-model             | nosuch-model
bench tokens 0                | bench --tokens 0                     | --tokens
bench repeats 0               | bench --repeats 0                    | --repeats
bench methods bogus           | bench --methods bogus                | bogus
bench timeout-s 0             | bench --timeout-s 0                  | --timeout-s
bench tokens 4096 (> context) | bench --tokens 4096                  | 4096      | t=300
bench data is a file          | bench --data {root}/afile            | afile     | t=300
[prompts]
prompts malformed JSON on line 3 | scan --prompts {P}malformed3.jsonl | malformed3.jsonl:3
prompts a list, not an object | scan --prompts {P}list.jsonl         | list.jsonl:1
prompts a JSON string line    | scan --prompts {P}scalar.jsonl       | scalar.jsonl:1
prompts missing text          | scan --prompts {P}notext.jsonl       | notext.jsonl:1
prompts text is a number      | scan --prompts {P}textnum.jsonl      | textnum.jsonl:1
prompts empty text            | scan --prompts {P}empty_text.jsonl   | empty_text.jsonl:1
prompts whitespace text       | scan --prompts {P}blank_text.jsonl   | blank_text.jsonl:1
prompts duplicate ids         | scan --prompts {P}dup_ids.jsonl      | 'a'
prompts ids 5 and '5'         | scan --prompts {P}dup_ids_types.jsonl | '5'
prompts id is an object       | scan --prompts {P}id_object.jsonl    | id_object.jsonl:1
prompts lone surrogate        | scan --prompts {P}surrogate.jsonl    | surrogate.jsonl:1
prompts trailing garbage      | scan --prompts {P}trailing.jsonl     | trailing.jsonl:1
prompts empty file            | scan --prompts {P}empty.jsonl        | empty.jsonl
prompts only blank lines      | scan --prompts {P}blank_lines.jsonl  | blank_lines.jsonl
prompts binary file           | scan --prompts {P}binary.jsonl       | binary.jsonl
prompts latin-1 bytes         | scan --prompts {P}latin1.jsonl       | latin1.jsonl:1
prompts a directory           | scan --prompts {P}adir               | adir
prompts missing file          | scan --prompts {P}nosuch.jsonl       | nosuch.jsonl
prompts symlink loop          | scan --prompts {P}loop.jsonl         | loop.jsonl
prompts dangling symlink      | scan --prompts {P}dangling.jsonl     | dangling.jsonl
prompts /dev/zero             | scan --prompts /dev/zero             | /dev/zero | t=60
prompts empty path            | scan --prompts ''                    | --prompts
prompts longer than context   | scan --prompts {P}toolong.jsonl --max-tokens none | toolong
prompts 20 MB, no truncation  | scan --prompts {P}huge20mb.jsonl --max-tokens none | huge
prompts 20 MB, truncated      | scan --prompts {P}huge20mb.jsonl     | huge      | either t=300
[models]
model dir empty               | scan --model {M}empty                | empty
model dir random weights      | scan --model {M}random_weights       | random_weights
model dir truncated weights   | scan --model {M}truncated_weights    | truncated_weights
model dir config not JSON     | scan --model {M}bad_config           | bad_config
model dir without weights     | scan --model {M}no_weights           | no_weights
model dir pickle weights only | scan --model {M}pickle_only          | pickle_only
model dir unknown model_type  | scan --model {M}unknown_type         | unknown_type
model dir wrong shapes        | scan --model {M}wrong_shape          | wrong_shape
model dir without tokenizer   | scan --model {M}no_tokenizer         | no_tokenizer
model dir is a file           | scan --model {M}afile                | afile
model dir real (control)      | scan --model {M}real                 |           | either
induction-check random weights | ind --model {M}random_weights       | random_weights
sweep random weights          | sweepf --model {M}random_weights     | random_weights
[runs]
show truncated results        | show truncated                       | truncated
show random-bytes results     | show garbage                         | garbage
show without manifest         | show no_manifest                     | no_manifest
show manifest not JSON        | show bad_manifest                    | bad_manifest
show manifest a JSON list     | show list_manifest                   | list_manifest
show foreign parquet          | show foreign                         | foreign
show schema v1                | show schema_v1                       | version 1
show no results tables        | show no_tables                       | no_tables
show foreign sweep table      | show foreign_sweep                   | sweep-x.parquet
show results symlinked out    | show results_link                    | results_link
show manifest symlinked out   | show manifest_link                   | manifest_link
show run symlinked out        | show dir_link                        | dir_link
mask-retrieval truncated      | mask rtruncated                      | rtruncated
mask-retrieval no manifest    | mask no_manifest                     | no_manifest
mask-retrieval bad manifest   | mask bad_manifest                    | bad_manifest
mask-retrieval symlinked run  | mask dir_link                        | dir_link
sweep resume, foreign part    | resume foreign_part                  | part-0000 | impure
sweep resume, garbage part    | resume garbage_part                  | part-0000 | impure
"""


def table_cases() -> list[Case]:
    found, klass = [], ""
    for row in filter(str.strip, TABLE.splitlines()):
        if row.startswith("["):
            klass = row.strip("[]")
            continue
        name, command, names, options = [*(c.strip() for c in row.split(" | ")), "", "", ""][:4]
        words = shlex.split(command) if command != "''" else []
        if words and words[0] in PREFIX:
            words = PREFIX[words[0]] + words[1:]
        opts = dict(o.partition("=")[::2] for o in options.split())
        found.append(Case(name, klass, words, "either" if "either" in opts else "error",
                          tuple(filter(None, names.split(","))), "impure" not in opts,
                          float(opts.get("t", 120)), float(opts["max"]) if "max" in opts else None,
                          check=no_doubled_rows if "either" in opts else None))  # fmt: skip
    return found


def cases() -> list[Case]:
    c = table_cases()
    for name in PLANS:
        stored = ["--metrics-run", "base", "--data", "{store}"] * name.startswith("*")
        name = name.lstrip("*")
        names = (f"{name}.toml", "plan 'p'", "[single_head]", "top_k", "[[strength]]")
        argv = [*PREFIX["plan"], f"{{fx}}/plans/{name}.toml", *stored]
        c.append(Case(f"plan {name}", "plans", argv, names=names))
    for name in ("binary.toml", "adir.toml", "nosuch.toml"):
        c.append(Case(f"plan file {name}", "plans", ["sweep", "--data", "{data}", "--plan",
                      "{fx}/plans/" + name], names=(name,)))  # fmt: skip
    special = [
        ("runs", "runs lists broken runs as unreadable", listing),
        ("runs", "show latest = newest by time, not by name", latest),
        ("concurrency", "two sweeps, same plan, at once",
         concurrent([*PREFIX["plan"], "{fx}/plans/conc.toml"], True)),
        ("concurrency", "two scans, same run id, at once",
         concurrent([*PREFIX["scan"], "--run-id", "same"], False)),
        ("faults", "dead writers' leftovers removed", planted_leftovers),
    ]  # fmt: skip
    big = ["scan", *TINY, "--prompts", "{P}big.jsonl", "--data", "{data}", "--run-id", "k1"]
    conc = [*PREFIX["plan"], "{fx}/plans/conc.toml"]
    for name, argv, sig, when, sweep in [
        ("SIGINT at startup (0.3 s)", PREFIX["scan"], signal.SIGINT, "0.3", False),
        ("SIGINT during model load (2.5 s)", PREFIX["scan"], signal.SIGINT, "2.5", False),
        ("SIGINT during scan", big, signal.SIGINT, "progress", False),
        ("SIGKILL during scan's write, rerun", [*big, "--quiet"], signal.SIGKILL, "staging", False),
        ("SIGKILL during scan, rerun", big, signal.SIGKILL, "progress", False),
        ("SIGINT during sweep, rerun", conc, signal.SIGINT, "part", True),
        ("SIGKILL during sweep, rerun", conc, signal.SIGKILL, "part", True),
    ]:
        special.append(("faults", name, interrupted(argv, sig, when, sweep)))
    for free, verb in ((48, "scan"), (0, "scan"), (48, "sweep")):
        special.append(("faults", f"full disk ({free}k free): {verb}", full_disk(free, verb)))
    c += [Case(name, klass, [], "special", pure=False, special=run) for klass, name, run in special]
    return c
