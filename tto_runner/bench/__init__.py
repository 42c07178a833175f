"""tto-bench: run a benchmark's tasks through one workflow per method on any number of ComfyUI servers.

    tto-bench --tasks VBVR-Bench/ --method tto --models tiny --out runs/
    tto-bench --tasks VBVR-Bench/ --method baseline --models wan22 --out runs/ \\
        --server http://gpu0:8188 --server http://gpu1:8188

For every task folder (first_frame.png + prompt.txt) the runner fills the method's API-format template
(workflows/api/bench/<method>_<models>.json, or --workflow), queues it on a free server, and saves the
video as `<out>/<method>/<task id>.mp4` (the layout VBVR-EvalKit reads), with one record per task in
`<out>/<method>/summary.json`. Scale-out is more ComfyUI servers: one worker thread per server pulls from a
shared task queue. Re-running with the same settings skips the tasks already done.

Modules, by concern: `tasks` (discovery and validation), `templates` (filling, size policy, settings,
config hash), `records` (records, node reports, summary file, resume decisions), `scheduler` (queue,
workers, error classification, retries), `cli` (options, run_bench, main).
"""

from .cli import build_parser, main, run_bench
from .tasks import BenchError, Task, discover_tasks
from .templates import METHODS, MODEL_SETS, TEMPLATE_DIR, fill_template, latent_size, load_template

__all__ = ["METHODS", "MODEL_SETS", "TEMPLATE_DIR", "BenchError", "Task", "build_parser", "discover_tasks",
           "fill_template", "latent_size", "load_template", "main", "run_bench"]
