"""builtin:tiny exported to compressed-tensors and answered by plain transformers, against slimvl's int8.

    .venv/bin/python benchmarks/export_accuracy.py --n 1000 --out benchmarks/results/export_ct_tiny.json

Rows, on the same `--n` test questions: the unoptimized model (slimvl); slimvl int8 (its optimized
directory); that directory exported (`slimvl export --format compressed-tensors`) and loaded by
transformers with the compressed-tensors package (`CompressedTensorsConfig(dequantize=True)`: int8
weights made float at load time, activations in fp32) answering with `generate` (greedy); and the
export read back by slimvl (its int8 kernels again). Paired differences against int8, first-token top-1
agreement and KL against int8.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from slimvl.atomic import write_text_atomic


@dataclass
class _Answer:
    text: str
    first_logits: torch.Tensor


class TransformersAnswers:
    """What `slimvl.eval.evaluate` asks of a model, answered by transformers' own `generate`."""

    def __init__(self, path: Path) -> None:
        from transformers import CompressedTensorsConfig, Qwen3VLForConditionalGeneration

        from slimvl.models.preprocess import Preprocessor

        self.model = Qwen3VLForConditionalGeneration.from_pretrained(
            path, dtype=torch.float32, quantization_config=CompressedTensorsConfig(dequantize=True)
        ).eval()
        self.preprocessor = Preprocessor.from_pretrained(path)

    @torch.inference_mode()
    def generate(self, images: list, question: str, max_new_tokens: int = 4) -> _Answer:
        inputs = self.preprocessor(images, question)
        out = self.model.generate(
            **inputs.model_kwargs(),
            do_sample=False,
            max_new_tokens=max_new_tokens,
            output_scores=True,
            return_dict_in_generate=True,
        )
        new = out.sequences[0, inputs.input_ids.shape[1] :].tolist()
        return _Answer(self.preprocessor.decode(new).strip(), out.scores[0][0].float())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    import slimvl
    from slimvl.data import examples
    from slimvl.eval import evaluate, next_token_agreement, paired_difference
    from slimvl.export.compressed_tensors import export_compressed_tensors

    torch.set_num_threads(args.threads)
    questions = list(examples("test", args.n))
    with tempfile.TemporaryDirectory() as tmp:
        int8_dir = slimvl.optimize("builtin:tiny", "int8", Path(tmp) / "int8")
        exported = export_compressed_tensors(int8_dir, Path(tmp) / "compressed-tensors")
        runs = {
            "none": slimvl.load("builtin:tiny"),
            "int8": slimvl.load(int8_dir),
            "transformers (export, decompressed)": TransformersAnswers(exported),
            "slimvl (export read back)": slimvl.load(exported),
        }
        results = {
            name: evaluate(model, keep_logprobs=True, questions=questions) for name, model in runs.items()
        }
    int8 = results["int8"]
    record = {"model": "builtin:tiny", "n": args.n, "rows": {}}
    for name, result in results.items():
        row = {"accuracy": result.accuracy}
        if name != "int8":
            row["paired_difference_vs_int8"] = paired_difference(int8, result)
            row["first_token_vs_int8"] = next_token_agreement(int8, result)
        record["rows"][name] = row
        print(name, json.dumps(row), flush=True)
    write_text_atomic(args.out, json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
