"""f5-tts's flow-matching sampler (`CFM.sample` with Euler steps), run for speed.

It computes what `CFM.sample` computes, with these differences:
- the time grid, the step sizes and the ODE state stay float32 (stock builds them in the
  model's dtype, float16 on a GPU); the transformer still runs in the model's dtype;
- the text embeddings and the time embedding of every step are computed once, before the loop
  (stock caches the text embeddings too, and recomputes the time embedding each step);
- the conditional and unconditional rows go through the input embedding in one call;
- on CUDA, every step after the first replays one captured CUDA graph of the step: an eager
  step launches about a thousand kernels, and at real sizes launching them, not running them,
  is what paces the GPU.

The network pass mirrors `DiT.forward(..., cfg_infer=True, cache=True)` (F5-TTS) and
`UNetT.forward` (E2-TTS) of f5-tts 1.1.22 (pinned); tests compare this sampler with
`CFM.sample` on the same seed for both.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

log = logging.getLogger("sampler")

#: CFM.sample's cap on a row's length, in mel frames.
MAX_FRAMES = 65536


def is_unet(net) -> bool:
    """E2-TTS's flat U-Net transformer (UNetT), rather than F5-TTS's DiT."""
    return not hasattr(net, "transformer_blocks")


def blocks_of(net) -> list:
    """The network's transformer blocks: DiT blocks, or UNetT's layers (skip projection,
    attention norm, attention, feed-forward norm, feed-forward)."""
    return list(net.layers if is_unet(net) else net.transformer_blocks)


def max_frames(net) -> int:
    """The longest row `net` can take in one pass: CFM.sample's cap, and for a DiT with text
    convolutions its table of text positions (8,192 frames, 87 s, in f5-tts 1.1.22; longer
    rows fail inside the model). UNetT clamps positions instead of failing."""
    text = net.text_embed
    if not is_unet(net) and getattr(text, "extra_modeling", False):
        return min(MAX_FRAMES, int(text.precompute_max_pos))
    return MAX_FRAMES


def row_length(text_tokens: int, ref_frames: int, duration: int) -> int:
    """A row's length as CFM.sample lengthens it: at least its text (and the reference) plus one
    frame. CFM.sample then caps it at MAX_FRAMES."""
    return max(duration, max(text_tokens, ref_frames) + 1)


def time_grid(steps: int, sway_sampling_coef: float | None, device) -> torch.Tensor:
    """CFM.sample's grid (Empirically Pruned Step Sampling, then sway sampling), in float32."""
    from f5_tts.model.utils import get_epss_timesteps

    t = get_epss_timesteps(steps, device=device, dtype=torch.float32)
    if sway_sampling_coef is not None:
        t = t + sway_sampling_coef * (torch.cos(torch.pi / 2 * t) - 1 + t)
    return t


class _Flow:
    """The guided velocity field of one request: v(step, x) for the whole batch."""

    def __init__(self, net, blocks, step_cond, text_ids, mask, t_grid, cfg_strength: float, dtype):
        self.net, self.blocks, self.dtype = net, blocks, dtype
        self.unet = is_unet(net)
        self.guided = cfg_strength >= 1e-5  # CFM.sample's threshold
        self.cfg_strength = cfg_strength
        batch, n = step_cond.shape[:2]
        seq_len = n if mask is None or self.unet else mask.sum(dim=1)  # UNetT's text embedding takes one length
        text_cond = net.text_embed(text_ids, seq_len=seq_len, drop_text=False)
        if self.guided:
            text_uncond = net.text_embed(text_ids, seq_len=seq_len, drop_text=True)
            # Rows [0, b) are conditional, [b, 2b) unconditional (no reference audio, no text).
            self.fixed = torch.cat((torch.cat((step_cond, text_cond), dim=-1),
                                    torch.cat((torch.zeros_like(step_cond), text_uncond), dim=-1)), dim=0)
            self.rows_mask = torch.cat((mask, mask), dim=0) if mask is not None else None
        else:
            self.fixed = torch.cat((step_cond, text_cond), dim=-1)
            self.rows_mask = mask
        rows = self.fixed.shape[0]
        if self.unet:  # UNetT puts the time embedding in front of the sequence, as one more position
            self.rope = net.rotary_embed.forward_from_seq_len(n + 1)
            self.token_mask = F.pad(self.rows_mask, (1, 0), value=True) if self.rows_mask is not None else None
        else:
            self.rope = net.rotary_embed.forward_from_seq_len(n)
        # TimestepEmbedding with the float32 time: sinusoids in float32, the MLP in the model's dtype.
        temb = net.time_embed.time_mlp(net.time_embed.time_embed(t_grid[:-1]).to(dtype))
        self.time_embeddings = temb[:, None, :].expand(-1, rows, -1).contiguous()  # steps x rows x dim

    def __call__(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        net = self.net
        x = x.to(self.dtype)
        rows = self.fixed.shape[0]
        xs = x.repeat(rows // x.shape[0], 1, 1)
        h = net.input_embed.proj(torch.cat((xs, self.fixed), dim=-1))
        pred = self._unet(h, temb) if self.unet else self._dit(h, temb)
        if not self.guided:
            return pred
        pred, null_pred = torch.chunk(pred, 2, dim=0)
        return pred + (pred - null_pred) * self.cfg_strength

    def _dit(self, h, temb):
        """DiT.forward after the input projection: blocks modulated by the time embedding."""
        net = self.net
        h = net.input_embed.conv_pos_embed(h, mask=self.rows_mask) + h
        residual = h
        for block in self.blocks:
            h = block(h, temb, mask=self.rows_mask, rope=self.rope)
        if net.long_skip_connection is not None:
            h = net.long_skip_connection(torch.cat((h, residual), dim=-1))
        return net.proj_out(net.norm_out(h, temb))

    def _unet(self, h, temb):
        """UNetT.forward after the input projection: the time embedding as the first position,
        then layers whose second half takes the first half's outputs back, last in first."""
        net = self.net
        h = net.input_embed.conv_pos_embed(h) + h
        h = torch.cat((temb.unsqueeze(1), h), dim=1)
        skips, half = [], len(self.blocks) // 2
        for i, (skip_proj, attn_norm, attn, ff_norm, ff) in enumerate(self.blocks):
            if i < half:
                skips.append(h)
            elif net.skip_connect_type == "concat":
                h = skip_proj(torch.cat((h, skips.pop()), dim=-1))
            elif net.skip_connect_type == "add":
                h = h + skips.pop()
            h = attn(attn_norm(h), rope=self.rope, mask=self.token_mask) + h
            h = ff(ff_norm(h)) + h
        return net.proj_out(net.norm_out(h)[:, 1:, :])


def _euler_eager(flow: _Flow, y: torch.Tensor, dts: torch.Tensor, start: int = 0) -> torch.Tensor:
    for i in range(start, len(dts)):
        y = y + dts[i] * flow(y, flow.time_embeddings[i])
    return y


def _euler_graphed(flow: _Flow, y: torch.Tensor, dts: torch.Tensor) -> torch.Tensor:
    """Step 0 runs eagerly (which also warms up cuDNN, cuBLAS and compiled kernels for this
    shape); the step is then captured once and replayed for the remaining steps."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        first = y + dts[0] * flow(y, flow.time_embeddings[0])
    torch.cuda.current_stream().wait_stream(stream)
    # What the graph reads and writes is allocated on the stream that replays it.
    state, temb, dt = first.clone(), flow.time_embeddings[1].clone(), dts[1].clone()
    graph = torch.cuda.CUDAGraph()
    try:
        # thread_local: the COMPILE thread may be running kernels of its own meanwhile.
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            state.add_(dt * flow(state, temb))
    except RuntimeError as exc:  # nothing ran during the capture: go on without the graph
        log.warning("CUDA graph capture failed, sampling this request eagerly: %s", exc)
        return _euler_eager(flow, state, dts, start=1)
    for i in range(1, len(dts)):
        temb.copy_(flow.time_embeddings[i])
        dt.copy_(dts[i])
        graph.replay()
    return state


def sample(
    cfm,
    ref_wave: torch.Tensor | list[torch.Tensor],
    text: list[str],
    duration: torch.Tensor,
    *,
    steps: int = 32,
    cfg_strength: float = 2.0,
    sway_sampling_coef: float | None = -1.0,
    seed: int | list[int] | None = None,
    cuda_graph: bool = True,
    blocks=None,
) -> tuple[torch.Tensor, list[int]]:
    """Mel frames (batch x frames x mels, float32) for `text` (one string per row) spoken in the
    voice of `ref_wave` (batch x samples, or one wave per row: references of different lengths),
    as `CFM.sample(ref_mels, text, duration, lens=ref_frames, steps=...)` would make them, and
    each row's length in frames (its reference included): `duration`, lengthened as CFM.sample
    lengthens it; frames past a row's length are padding. `blocks`: the network's blocks to run
    (compiled ones, say); the model's own by default."""
    from f5_tts.model.utils import lens_to_mask, list_str_to_idx

    net, dtype = cfm.transformer, next(cfm.parameters()).dtype
    refs = reference_mels(cfm, ref_wave)
    device = refs[0].device
    batch, ref_lens = len(refs), [len(r) for r in refs]
    text_ids = list_str_to_idx(text, cfm.vocab_char_map).to(device)
    lengths = [min(row_length(len(t), r, d), MAX_FRAMES) for t, r, d in zip(text, ref_lens, duration.tolist())]
    duration = torch.tensor(lengths, device=device)
    frames = max(lengths)
    cond = torch.nn.utils.rnn.pad_sequence(refs, batch_first=True).to(dtype)
    cond = F.pad(cond, (0, 0, 0, frames - cond.shape[1]))
    lens = torch.tensor(ref_lens, device=device, dtype=torch.long)
    cond_mask = lens_to_mask(lens, length=frames).unsqueeze(-1)
    step_cond = torch.where(cond_mask, cond, torch.zeros_like(cond))
    mask = lens_to_mask(duration) if batch > 1 else None

    # The same noise as CFM.sample, which re-seeds torch's global generator for each row: each row
    # drawn, in the model's dtype, from a generator of its own seeded the same way (the same
    # numbers), which nothing another thread draws meanwhile can move (a compile's warm-up,
    # inductor's autotuning of a build on CUDA, which draws from the global generator).
    noise = []
    for n, row_frames in enumerate(lengths):
        row_seed = seed[n] if isinstance(seed, list) else seed  # rows of several jobs: each its own
        generator = None if row_seed is None else torch.Generator(device=device).manual_seed(row_seed)
        noise.append(torch.randn(row_frames, cfm.num_channels, device=device, dtype=dtype, generator=generator))
    y = torch.nn.utils.rnn.pad_sequence(noise, padding_value=0, batch_first=True).float()

    t = time_grid(steps, sway_sampling_coef, device)
    dts = t[1:] - t[:-1]
    flow = _Flow(net, blocks_of(net) if blocks is None else blocks, step_cond, text_ids, mask, t, cfg_strength, dtype)
    graphed = cuda_graph and device.type == "cuda" and steps > 1
    y = _euler_graphed(flow, y, dts) if graphed else _euler_eager(flow, y, dts)
    return torch.where(cond_mask, cond.float(), y), lengths


def reference_mels(cfm, ref_wave: torch.Tensor | list[torch.Tensor]) -> list[torch.Tensor]:
    """Each row's reference as mel frames (frames x mels). A batch tensor goes through the mel
    transform in one call; a list, one call per distinct wave (rows of one voice share it), each
    on its own samples: padding a shorter wave would change its last frames."""
    if isinstance(ref_wave, torch.Tensor):
        return list(cfm.mel_spec(ref_wave).permute(0, 2, 1))
    mels: dict[int, torch.Tensor] = {}
    for wave in ref_wave:
        if id(wave) not in mels:
            mels[id(wave)] = cfm.mel_spec(wave.reshape(1, -1)).permute(0, 2, 1)[0]
    return [mels[id(wave)] for wave in ref_wave]
