"""A bench row's own process: load the model once, warm up once, then one measured run per command.

Own process, so that the row's peak RSS and load time are its own. It speaks the JSON-lines protocol of
`slimvl.bench.worker_protocol`, with the runners of `slimvl.bench.runners`.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import torch
import transformers.utils.logging as hf_logging

from slimvl.bench.runners import RUNNERS
from slimvl.bench.worker_protocol import megabytes, protocol_channel, serve
from slimvl.hugepages import huge_page_bytes
from slimvl.procfs import read_vm_hwm_bytes


def _ready_fields() -> dict[str, Any]:
    return {
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "huge_page_mb": megabytes(huge_page_bytes()),
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    spec = json.loads(args[0])
    send = protocol_channel()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    torch.set_num_threads(spec["threads"])
    return serve(
        lambda: RUNNERS[spec["kind"]](spec),
        spec["warmup_image"],
        send,
        peak_rss_mb=lambda: megabytes(read_vm_hwm_bytes()),
        ready_fields=_ready_fields,
    )


if __name__ == "__main__":
    sys.exit(main())
