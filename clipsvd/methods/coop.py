"""CoOp (Zhou et al., IJCV 2022; KaiyangZhou/CoOp@ff61507): learned context vectors in the class prompts.

The prompt of class c is [SOS] v_1 … v_M <name of c>. [EOS] (trainers/coop.py PromptLearner, class token at
the end): M = 16 vectors in the token-embedding space, shared by all classes (or one set per class with
`class_specific`), initialised N(0, 0.02) or from the embeddings of a phrase (`ctx_init`). Only they train; the
text tower runs on the edited embeddings, the image tower is frozen, no weight of the model changes.

Here the class prompts come from the dataset's class names through the template "{}." (the preset), so a
prompt "<name>." is exactly the text CoOp places after its context; any other template is kept after the
context as given. The text encoder stops at the batch's last end-of-text token (exact under the causal mask,
as clip_svd.encode_text_to_last_eot). Interpretation: `nearest_words` (clipsvd/analysis/prompts.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from clipsvd.errors import CheckpointError, ConfigError
from clipsvd.methods.base import Method, MethodConfig, check_adapter_keys
from clipsvd.methods.registry import register_method


def _prompt_text(prompt) -> str:
    if not isinstance(prompt, str):
        raise ConfigError("coop: learns one prompt per class; give one template, not an ensemble "
                          f"(got {len(prompt)} prompts for one class)")
    return prompt


def token_count(tokenizer, text: str) -> int:
    """Tokens of `text` without start/end of text (open_clip's SimpleTokenizer.encode)."""
    if not hasattr(tokenizer, "encode"):
        raise ConfigError(f"coop: the tokenizer {type(tokenizer).__name__} cannot count tokens (no encode)")
    return len(tokenizer.encode(text))


def text_tower_of(model: nn.Module) -> nn.Module:
    """The open_clip CLIP whose text tower CoOp can feed with embeddings (token_embedding … text_projection)."""
    from clipsvd.methods.clip_svd import trims_text_padding

    if not (hasattr(model, "token_embedding") and trims_text_padding(model)):
        raise ConfigError(f"coop: needs open_clip's own text tower (token embedding, causal mask, end-of-text "
                          f"pooling); {type(model).__name__} has another")
    return model


def encode_text_embeddings(model: nn.Module, embeddings: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """open_clip's CLIP.encode_text from token embeddings instead of token ids (CoOp's TextEncoder), on the
    positions up to the batch's last end-of-text token (the padding after it cannot reach the features)."""
    from open_clip.transformer import text_global_pool

    length = int(tokens.argmax(dim=-1).max()) + 1
    cast_dtype = model.transformer.get_cast_dtype()
    x = embeddings[:, :length].to(cast_dtype) + model.positional_embedding[:length].to(cast_dtype)
    x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
    x = text_global_pool(model.ln_final(x), tokens[:, :length], "argmax")
    if model.text_projection is not None:
        x = model.text_projection(x) if isinstance(model.text_projection, nn.Linear) else x @ model.text_projection
    return x


@dataclass
class CoOpConfig(MethodConfig):
    """CoOp's defaults (train.py extend_cfg, configs/trainers/CoOp/vit_b16*.yaml); the preset sets epochs by K."""

    optimizer: str = "sgd"
    lr: float = 2e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    epochs: int = 200
    schedule: str = "cosine-epoch"
    warmup_epochs: int = 1
    warmup: str = "constant"
    warmup_lr: float = 1e-5
    min_lr: float = 0.0
    drop_last: bool = True
    templates: list[str] = field(default_factory=lambda: ["{}."])
    n_ctx: int = field(default=16, metadata={"help": "number of learned context vectors (TRAINER.COOP.N_CTX)"})
    ctx_init: str = field(default="", metadata={
        "help": "a phrase whose token embeddings initialise the context, e.g. 'a photo of a' (then its token count "
                "replaces n_ctx); empty: N(0, 0.02) (TRAINER.COOP.CTX_INIT)"})
    class_specific: bool = field(default=False, metadata={
        "help": "one context per class (CSC) instead of one shared by all; such a context knows only its training "
                "classes (TRAINER.COOP.CSC)"})

    def validate(self) -> None:
        super().validate()
        if self.n_ctx < 1:
            raise ConfigError(f"n_ctx: expected >= 1 context vectors, got {self.n_ctx}")
        if len(self.templates) > 1:
            raise ConfigError("templates: coop learns one prompt per class; give one template, not an ensemble")
        if self.ctx_init and self.class_specific:
            raise ConfigError("ctx_init: the official CoOp initialises a shared context only; leave class_specific "
                              "off or ctx_init empty")


@register_method
class CoOp(Method):
    name = "coop"
    display_name = "CoOp"
    summary = "16 learned context vectors before each class name in the text prompt (KaiyangZhou/CoOp)."
    Config = CoOpConfig
    trains_text_encoder = False
    changes_weights = False  # only the context vectors train; every weight stays the pretrained one
    learns_context = True

    def setup(self, loaded, class_prompts) -> None:
        cfg = self.config
        model = text_tower_of(loaded.model)
        context_length = int(model.positional_embedding.shape[0])
        embedding = model.token_embedding
        if cfg.ctx_init:
            n_ctx = token_count(loaded.tokenizer, cfg.ctx_init)
            if n_ctx + 3 > context_length:  # start, end of text and at least one token of a class name
                raise ConfigError(f"ctx_init: {cfg.ctx_init!r} is {n_ctx} tokens, longer than the context length "
                                  f"{context_length} allows before a class name ({context_length - 3} at most)")
            tokens = loaded.tokenize([cfg.ctx_init])
            if n_ctx < 1:
                raise ConfigError(f"ctx_init: '{cfg.ctx_init}' has no token")
            with torch.no_grad():
                ctx = embedding(tokens)[0, 1:1 + n_ctx].clone()
            self.prefix = cfg.ctx_init
        else:
            n_ctx = cfg.n_ctx
            if n_ctx + 3 > context_length:
                raise ConfigError(f"n_ctx: {n_ctx} context vectors leave no room for a class name in "
                                  f"{context_length} positions")
            shape = (len(class_prompts), n_ctx, embedding.weight.shape[1]) if cfg.class_specific \
                else (n_ctx, embedding.weight.shape[1])
            ctx = torch.empty(shape, dtype=embedding.weight.dtype, device=embedding.weight.device)
            nn.init.normal_(ctx, std=0.02)
            self.prefix = " ".join(["X"] * n_ctx)
        self.n_ctx = n_ctx
        self.ctx = nn.Parameter(ctx)
        self.train_prompts = [_prompt_text(p) for p in class_prompts]
        self._train_tokens = self._tokens(self.train_prompts)

    def _tokens(self, prompts: list[str]) -> torch.Tensor:
        """Token ids of "<context placeholder> <prompt>" per class, refusing prompts that would be cut off."""
        texts = [f"{self.prefix} {_prompt_text(p)}" for p in prompts]
        tokens = self.loaded.tokenize(texts)
        for text in texts:
            if token_count(self.loaded.tokenizer, text) + 2 > tokens.shape[1]:
                raise ConfigError(f"coop: the prompt {text!r} ({self.n_ctx} context tokens and the class prompt) is "
                                  f"longer than the context length {tokens.shape[1]}")
        return tokens

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [self.ctx]

    def learned_context(self) -> torch.Tensor:
        return self.ctx

    def prompt_embeddings(self, tokens: torch.Tensor) -> torch.Tensor:
        """The class prompts' token embeddings with positions 1 … M replaced by the context vectors."""
        with torch.no_grad():
            embedded = self.model.token_embedding(tokens)
        ctx = self.ctx.to(embedded.dtype)
        ctx = ctx.unsqueeze(0).expand(tokens.shape[0], -1, -1) if ctx.dim() == 2 else ctx
        return torch.cat([embedded[:, :1], ctx, embedded[:, 1 + self.n_ctx:]], dim=1)

    def class_weights(self, class_prompts: list[str]) -> torch.Tensor:
        prompts = [_prompt_text(p) for p in class_prompts]
        if prompts == self.train_prompts:
            tokens = self._train_tokens
        elif self.ctx.dim() == 3:
            raise ConfigError("coop: a class-specific context knows only its training classes; novel classes need "
                              "the shared context (class_specific off)")
        else:
            tokens = self._tokens(prompts)
        features = encode_text_embeddings(self.model, self.prompt_embeddings(tokens), tokens)
        return F.normalize(features, dim=-1)

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return super().image_features(images)

    def adapter_state(self) -> dict[str, torch.Tensor]:
        return {"ctx": self.ctx.detach().cpu().clone()}

    def load_adapter_state(self, tensors: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
        check_adapter_keys(self.adapter_state(), tensors, source, self.name)
        if not torch.isfinite(tensors["ctx"]).all():
            raise CheckpointError(f"{source}: the context vectors hold NaN or infinity")
        with torch.no_grad():
            self.ctx.copy_(tensors["ctx"].to(self.ctx.device, self.ctx.dtype))
