"""Train the tiny LM on one selection for a fixed token budget.

Every selection gets the same budget, so a 10% sample is seen for ~10x more
epochs than the full data, as in the paper. The subset's documents are packed
into one token stream; each step reads `batch_size` contiguous windows from it
at positions drawn from a generator seeded by (seed, step). Because a batch
depends only on (seed, step), a run killed and resumed from its last checkpoint
sees exactly the batches an uninterrupted run would, and ends with the same
weights.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.utils.deterministic

from dselect_assets.core.hashing import file_sha256
from dselect_assets.core.lm.tiny_lm import CONFIG_FILE, WEIGHTS_FILE, GPTConfig, TinyGPT, save_model
from dselect_assets.core.progress import Progress

RESUME_STATE_FILE = "resume_state.pt"
RESULT_FILE = "train_result.json"
TRAIN_CONFIG_FILE = "train_config.json"

# 384 steps of 8 x 64 tokens (context 64, tiny_lm.GPTConfig): about 30 s of one core, so the default run's
# 21 trainings (7 selections x 3 seeds) take ~5 min on its 2 workers. On the default corpus's full data, seed 0
# (benchmarks/bench_train.py --corpus): high-quality perplexity 0.52x the unigram baseline, where 128 steps of
# 8 x 128 (the same seconds as 256 of 8 x 64) gave 0.80x, 256 of 8 x 128 0.56x at ~40 s, and 512 of 8 x 128
# 0.32x at ~90 s. More short steps learn more per second than fewer long ones; lr 4e-3 did worse than 2e-3.
DEFAULT_TOKEN_BUDGET = 196_608


@dataclass(frozen=True)
class TrainConfig:
    token_budget: int = DEFAULT_TOKEN_BUDGET
    batch_size: int = 8
    learning_rate: float = 2e-3
    min_learning_rate_ratio: float = 0.1
    warmup_fraction: float = 0.05
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    checkpoint_every: int = 64  # 5 intermediate checkpoints in a default run
    # Forward pass autocast to bf16 on the CPU too (CUDA always autocasts). On an AVX512-BF16 CPU
    # the default run trained in 0.83x the time of fp32, final loss 6.232 vs 6.236, high-quality
    # perplexity 575 vs 578 (the full data, one thread).
    cpu_bf16: bool = False
    model: GPTConfig = field(default_factory=GPTConfig)

    def __post_init__(self) -> None:
        if self.token_budget < self.tokens_per_step:
            raise ValueError(
                f"token_budget={self.token_budget} is below one step "
                f"(batch_size {self.batch_size} x context {self.context_length})"
            )
        if self.batch_size < 1 or self.checkpoint_every < 1:
            raise ValueError(f"batch_size and checkpoint_every must be >= 1: {self}")

    @property
    def context_length(self) -> int:
        return self.model.context_length

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.context_length

    @property
    def total_steps(self) -> int:
        return self.token_budget // self.tokens_per_step

    @property
    def warmup_steps(self) -> int:
        return max(1, round(self.warmup_fraction * self.total_steps))

    def to_dict(self) -> dict:
        return asdict(self)

    def with_vocab(self, vocab_size: int) -> TrainConfig:
        return replace(self, model=replace(self.model, vocab_size=vocab_size))


@dataclass
class TrainResult:
    steps: int
    total_steps: int
    completed: bool
    tokens_seen: int
    epochs: float  # tokens_seen / tokens in the packed subset
    loss_history: list[float]
    final_loss: float
    wall_seconds: float  # this invocation only (a resumed run counts its own part)
    tokens_per_second: float
    resumed_from_step: int
    device: str
    num_threads: int
    num_parameters: int
    model_dir: str
    weights_path: str | None
    config_path: str | None
    weights_sha256: str | None
    data_fingerprint: str

    def to_dict(self) -> dict:
        return asdict(self)


def learning_rate_at(step: int, config: TrainConfig) -> float:
    """Linear warmup to the peak, then cosine decay to min_learning_rate_ratio x peak."""
    peak = config.learning_rate
    if step < config.warmup_steps:
        return peak * (step + 1) / config.warmup_steps
    decay_steps = max(1, config.total_steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / decay_steps)
    floor = peak * config.min_learning_rate_ratio
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def pack_documents(token_docs: Sequence[np.ndarray], vocab_size: int) -> np.ndarray:
    """Concatenate documents (each already ending in end-of-text) into one int64 stream."""
    if not token_docs:
        raise ValueError("no documents to train on")
    stream = np.concatenate([np.asarray(doc, dtype=np.int64).ravel() for doc in token_docs])
    if stream.size and (stream.min() < 0 or stream.max() >= vocab_size):
        bad = next(
            i for i, doc in enumerate(token_docs) if np.any((np.asarray(doc) < 0) | (np.asarray(doc) >= vocab_size))
        )
        raise ValueError(f"document {bad} has token ids outside [0, {vocab_size})")
    return stream


def sample_batch(
    stream: np.ndarray, step: int, seed: int, batch_size: int, context_length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and next-token targets, (batch, context) each, from windows chosen by (seed, step)."""
    rng = np.random.default_rng((seed, step))
    starts = rng.integers(0, stream.size - context_length, size=batch_size)
    windows = torch.from_numpy(stream[starts[:, None] + np.arange(context_length + 1)])
    return windows[:, :-1], windows[:, 1:]


def default_num_threads() -> int:
    """Intra-op threads for a CPU run: $DSELECT_TRAIN_THREADS, else 1 unless OpenMP waits passively.

    With OpenMP's default (active, spinning) wait policy, 2 threads on a 2-core machine that
    other processes also use ran 8-10x *slower* than 1 thread (threads spin while descheduled
    peers hold the barrier). OMP_WAIT_POLICY=PASSIVE, set before torch is imported, removes
    that; then every core (up to 8, past which a model this small stops scaling) is used.
    """
    if os.environ.get("DSELECT_TRAIN_THREADS"):
        return max(1, int(os.environ["DSELECT_TRAIN_THREADS"]))
    if os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE":
        return max(1, min(len(os.sched_getaffinity(0)), 8))
    return 1


@contextlib.contextmanager
def reproducible_torch(num_threads: int) -> Iterator[None]:
    """Fixed thread count and deterministic kernels for the block; restores the caller's settings."""
    previous_threads = torch.get_num_threads()
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    previous_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    previous_fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.set_num_threads(num_threads)
    # warn_only: a kernel without a deterministic variant (some CUDA backwards) warns instead of failing
    torch.use_deterministic_algorithms(True, warn_only=True)
    # NaN-filling every empty tensor costs ~7% of a CPU step and only guards against reading
    # uninitialized memory, which no op here does
    torch.utils.deterministic.fill_uninitialized_memory = False
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    try:
        with torch.random.fork_rng(devices=devices):  # seeding here leaves the caller's RNG alone
            yield
    finally:
        torch.set_num_threads(previous_threads)
        torch.use_deterministic_algorithms(previous_deterministic, warn_only=previous_warn_only)
        torch.utils.deterministic.fill_uninitialized_memory = previous_fill


def _make_optimizer(model: TinyGPT, config: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    # decay matrices only; biases and LayerNorm gains stay undecayed
    decayed = [p for p in model.parameters() if p.dim() >= 2]
    undecayed = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW(
        [{"params": decayed, "weight_decay": config.weight_decay}, {"params": undecayed, "weight_decay": 0.0}],
        lr=config.learning_rate,
        betas=(config.beta1, config.beta2),
        fused=device.type == "cuda",
    )


def _fingerprint(stream: np.ndarray, config: TrainConfig, seed: int) -> str:
    digest = hashlib.sha256(np.ascontiguousarray(stream).tobytes())
    digest.update(json.dumps({"config": config.to_dict(), "seed": seed}, sort_keys=True).encode())
    return digest.hexdigest()


def _save_resume_state(
    path: Path, model: TinyGPT, optimizer, step: int, losses: list[float], fingerprint: str, num_threads: int
) -> None:
    state = {
        "num_threads": num_threads,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "step": step,
        "losses": losses,
        "fingerprint": fingerprint,
        "cpu_rng": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda_rng"] = torch.cuda.get_rng_state()
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)  # atomic: a kill mid-write leaves the previous checkpoint intact


def train_lm(
    token_docs: Sequence[np.ndarray],
    config: TrainConfig,
    out_dir: str | Path,
    seed: int,
    resume: bool = True,
    *,
    stop_at_step: int | None = None,
    num_threads: int | None = None,
    progress: Progress | None = None,
) -> TrainResult:
    """Train a fresh TinyGPT on the packed `token_docs` for `config.token_budget` tokens.

    Writes model.safetensors + config.json (+ train_config.json, train_result.json)
    to `out_dir`, and a resume checkpoint every `config.checkpoint_every` steps.
    With `resume`, a finished run in `out_dir` is returned as is and an unfinished
    one continues from its checkpoint. `stop_at_step` ends the run early after
    checkpointing (to simulate an interruption); the result then has completed=False.
    `progress(done, total, elapsed)` is called after every step with the steps of this
    invocation (a resumed run counts from its checkpoint), so done/elapsed is its rate.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stream = pack_documents(token_docs, config.model.vocab_size)
    if stream.size < config.context_length + 1:
        raise ValueError(
            f"subset has {stream.size} tokens, fewer than one training window ({config.context_length + 1})"
        )
    fingerprint = _fingerprint(stream, config, seed)
    state_path, result_path = out_dir / RESUME_STATE_FILE, out_dir / RESULT_FILE

    if not resume:
        for stale in (state_path, result_path):
            stale.unlink(missing_ok=True)
    elif result_path.is_file():
        finished = json.loads(result_path.read_text())
        if finished["data_fingerprint"] != fingerprint:
            raise ValueError(f"{result_path} is a run on other data/config/seed; use resume=False or a new out_dir")
        return TrainResult(**finished)

    use_cuda = torch.cuda.is_available()
    if use_cuda:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
    device = torch.device("cuda" if use_cuda else "cpu")
    state = None
    if resume and state_path.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        if state["fingerprint"] != fingerprint:
            raise ValueError(f"{state_path} is a run on other data/config/seed; use resume=False or a new out_dir")
    # CPU kernels split work by thread count, so a resumed run keeps the count its weights were made with
    num_threads = num_threads or (state["num_threads"] if state else default_num_threads())
    autocast = (
        torch.autocast(device_type=device.type, dtype=torch.bfloat16) if use_cuda or config.cpu_bf16
        else contextlib.nullcontext()
    )

    with reproducible_torch(num_threads):
        torch.manual_seed(seed)
        model = TinyGPT(config.model).to(device)
        optimizer = _make_optimizer(model, config, device)
        start_step, losses = 0, []
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            start_step, losses = state["step"], list(state["losses"])
            torch.set_rng_state(state["cpu_rng"])
            if use_cuda and "cuda_rng" in state:
                torch.cuda.set_rng_state(state["cuda_rng"])

        end_step = config.total_steps if stop_at_step is None else min(stop_at_step, config.total_steps)
        pending: list[torch.Tensor] = []  # losses stay on device until a checkpoint, to avoid per-step syncs
        model.train()
        started = time.perf_counter()
        step = start_step
        while step < end_step:
            for group in optimizer.param_groups:
                group["lr"] = learning_rate_at(step, config)
            inputs, targets = sample_batch(stream, step, seed, config.batch_size, config.context_length)
            inputs = inputs.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            with autocast:
                _, loss = model(inputs, targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            pending.append(loss.detach())
            step += 1
            if progress is not None:
                progress(step - start_step, end_step - start_step, time.perf_counter() - started)
            if step % config.checkpoint_every == 0 or step == end_step:
                losses.extend(torch.stack(pending).float().cpu().tolist())
                pending.clear()
                if step < config.total_steps:
                    _save_resume_state(state_path, model, optimizer, step, losses, fingerprint, num_threads)
        if use_cuda:
            torch.cuda.synchronize()
        wall_seconds = time.perf_counter() - started

    completed = step >= config.total_steps
    tokens_this_run = (step - start_step) * config.tokens_per_step
    result = TrainResult(
        steps=step,
        total_steps=config.total_steps,
        completed=completed,
        tokens_seen=step * config.tokens_per_step,
        epochs=step * config.tokens_per_step / stream.size,
        loss_history=losses,
        final_loss=losses[-1] if losses else float("nan"),
        wall_seconds=wall_seconds,
        tokens_per_second=tokens_this_run / wall_seconds if wall_seconds > 0 else 0.0,
        resumed_from_step=start_step,
        device=str(device),
        num_threads=num_threads,
        num_parameters=model.num_parameters(),
        model_dir=str(out_dir),
        weights_path=None,
        config_path=None,
        weights_sha256=None,
        data_fingerprint=fingerprint,
    )
    if not completed:
        return result

    weights_path = save_model(model, out_dir)
    result.weights_path = str(weights_path)
    result.config_path = str(out_dir / CONFIG_FILE)
    result.weights_sha256 = file_sha256(weights_path)
    (out_dir / TRAIN_CONFIG_FILE).write_text(json.dumps({**config.to_dict(), "seed": seed}, indent=2, sort_keys=True))
    tmp = result_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result.to_dict(), indent=2))
    tmp.replace(result_path)  # written last: its presence marks a finished run
    state_path.unlink(missing_ok=True)
    return result


__all__ = [
    "DEFAULT_TOKEN_BUDGET",
    "RESULT_FILE",
    "RESUME_STATE_FILE",
    "TrainConfig",
    "TrainResult",
    "WEIGHTS_FILE",
    "learning_rate_at",
    "pack_documents",
    "sample_batch",
    "train_lm",
]
