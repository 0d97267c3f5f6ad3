"""The ``lm_eval.api.model.LM`` adapter for our GPT (lm-evaluation-harness 0.4.x).

``TemplateLM`` turns ``(context, continuation)`` strings into token lists (whole string
encoded, then split at the context's length, trailing context spaces moved to the
continuation); this adapter scores them:

* ``_loglikelihood_tokens``: batched, longest first, right-padded (causal attention, so
  padding never reaches the scored positions); ``(sum log p(continuation), greedy?)``.
* ``loglikelihood_rolling``: lm-eval's disjoint rolling windows of ``max_length`` tokens
  of the text's own ids, the first one conditioned on ``prefix_token_id``; the sum over
  windows.
* ``generate_until``: greedy decoding (no sampling: ``do_sample`` true is refused), up to
  ``max_gen_toks`` tokens, cut at the first stop string or end-of-document.

Special tokens follow the run's tokenizer: a text is encoded as a training document is
(``tokenize``: a Llama-style Hugging Face tokenizer puts BOS first), without them when
lm-eval asks (``add_special_tokens=False``: ``tokenize_text``); a text with no context is
conditioned on BOS where the tokenizer starts every document with it, else on the
end-of-document token (``eot_token_id``, the tokenizer's ``eod``).
"""
from __future__ import annotations

import torch
from lm_eval.api.model import TemplateLM
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from tasks.eval_model import EvalModel

Request = tuple[tuple[str, str] | None, list[int], list[int]]


class MegatronLM(TemplateLM):
    """lm-eval model backed by :class:`tasks.eval_model.EvalModel`.

    Args:
        scorer: the loaded model.
        batch_size: sequences per forward pass.
    """

    def __init__(self, scorer: EvalModel, batch_size: int = 8) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
        self.scorer, self.batch_size = scorer, batch_size

    @property
    def eot_token_id(self) -> int:
        return int(self.scorer.tokenizer.eod)

    @property
    def max_length(self) -> int:
        return self.scorer.max_length

    @property
    def prefix_token_id(self) -> int:
        tokenizer = self.scorer.tokenizer
        return int(tokenizer.bos) if getattr(tokenizer, "adds_bos", False) else self.eot_token_id

    def tok_encode(self, string: str, add_special_tokens: bool | None = None,
                   **kwargs) -> list[int]:
        tokenizer = self.scorer.tokenizer
        if add_special_tokens is False:
            return list(getattr(tokenizer, "tokenize_text", tokenizer.tokenize)(string))
        return list(tokenizer.tokenize(string))

    def tok_decode(self, tokens: list[int]) -> str:
        return self.scorer.tokenizer.detokenize(tokens)

    def _score_batch(self, batch: list[tuple[list[int], list[int]]]
                     ) -> list[tuple[float, bool]]:
        """(context, continuation) token lists -> (log-likelihood, greedy) each."""
        inputs = []
        for context, continuation in batch:
            whole = (context + continuation)[-(self.max_length + 1):]
            inputs.append(whole[:-1])
        width = max(len(x) for x in inputs)
        tokens = torch.full((len(inputs), width), self.eot_token_id, dtype=torch.long)
        for row, x in enumerate(inputs):
            tokens[row, :len(x)] = torch.tensor(x, dtype=torch.long)
        logp = self.scorer.log_probs(tokens)  # [b, width, V]
        out = []
        for row, ((_, continuation), x) in enumerate(zip(batch, inputs)):
            n = len(continuation)
            scored = logp[row, len(x) - n:len(x)]            # [n, V]
            target = torch.tensor(continuation, dtype=torch.long)
            ll = scored.gather(-1, target[:, None]).sum().item()
            out.append((float(ll), bool((scored.argmax(-1) == target).all())))
        return out

    def _loglikelihood_tokens(self, requests: list[Request], disable_tqdm: bool = False,
                              **kwargs) -> list[tuple[float, bool]]:
        order = sorted(range(len(requests)),
                       key=lambda i: -len(requests[i][1] + requests[i][2]))
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            scores = self._score_batch([(requests[i][1], requests[i][2]) for i in chunk])
            for i, score in zip(chunk, scores):
                results[i] = score
                if requests[i][0] is not None:
                    self.cache_hook.add_partial("loglikelihood", requests[i][0], score)
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        out = []
        for (text,) in [req.args for req in requests]:
            ids = self.tok_encode(text, add_special_tokens=False)
            windows = [make_disjoint_window(w) for w in get_rolling_token_windows(
                ids, prefix_token=self.prefix_token_id, max_seq_len=self.max_length,
                context_len=1)]
            scores = self._loglikelihood_tokens([(None, c, t) for c, t in windows])
            total = sum(ll for ll, _ in scores)
            self.cache_hook.add_partial("loglikelihood_rolling", (text,), total)
            out.append(total)
        return out

    def _greedy(self, context: list[int], until: list[str], max_new: int) -> str:
        tokens, text = list(context), ""
        for _ in range(max_new):
            window = tokens[-self.max_length:]
            logp = self.scorer.log_probs(torch.tensor([window], dtype=torch.long))
            nxt = int(logp[0, -1].argmax())
            if nxt == self.eot_token_id:
                break
            tokens.append(nxt)
            text = self.tok_decode(tokens[len(context):])
            if any(stop in text for stop in until):
                break
        for stop in until:
            text = text.split(stop)[0]
        return text

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        out = []
        for context, gen_kwargs in [req.args for req in requests]:
            kwargs = dict(gen_kwargs)
            if kwargs.pop("do_sample", False) or float(kwargs.pop("temperature", 0.0)) > 0:
                raise ValueError("only greedy generation is supported (do_sample: false, "
                                 "temperature: 0)")
            until = kwargs.pop("until", None) or [self.tok_decode([self.eot_token_id])]
            until = [until] if isinstance(until, str) else list(until)
            max_new = int(kwargs.pop("max_gen_toks", 256))
            if kwargs:
                raise ValueError(f"unsupported generation arguments: {sorted(kwargs)}")
            context_tokens = self.tok_encode(context)[-(self.max_length - 1):]
            text = self._greedy(context_tokens, until, max_new)
            self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
            out.append(text)
        return out
