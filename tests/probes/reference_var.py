"""Test-only transcription of the visual-attention-sink authors' logic (MICV-yonsei/VisAttnSink,
src/logic/logic.py: DimProspector.run_logic, HeadFork.run_logic, VARProcessor.attn_redist),
rewritten from reading it, with their class state turned into arguments. Not used by the package.

What their code does, kept here as they do it:
- DimProspector runs on the prefill only, on the decoder layer's input hidden states, at layers
  2..L-1; its token indices include text tokens (BOS) as well as image tokens.
- HeadFork runs on every forward pass (prefill and each decoding step) on the softmaxed pattern
  and returns the (batch, head, query) coordinates whose visual-sink portion is <= rho and image
  summation >= summ; nothing when the layer has no visual sink.
- attn_redist multiplies the attention on every sink index (visual and text) by p (the share
  they KEEP) and gives (1 - p) of it to the image, in proportion to the non-sink image attention;
  in the prefill only queries at or after the image's end are edited. (Its `except_last_layer`
  check reads VARProcessor's own class attribute, False, so the last layer is edited too.)
"""

import torch


def dim_prospector(hs: torch.Tensor, dim_sink: torch.Tensor, tau: float) -> torch.Tensor:
    """hs [bsz, tok, dim] -> token indices with a massive activation in a sink dimension."""
    hs = hs.to(torch.float32)
    variance = hs.pow(2).mean(-1, keepdim=True)
    rms_norm_hs = torch.abs(hs * torch.rsqrt(variance + 1e-6))
    rms_values = torch.stack([rms_norm_hs[:, :, idx] for idx in dim_sink], dim=-1)
    max_rms_values = torch.max(rms_values, dim=-1)[0]
    return torch.nonzero(max_rms_values > tau)[:, 1]


def head_fork(attn, sink_inds, im: int, pa: int, rho: float, summ: float):
    """attn [bsz, H, Q, K] -> coordinates [n, 3] (batch, head, query), or [] (no visual sink)."""
    vis_sink_inds = [i.unsqueeze(0) for i in sink_inds if im <= i < im + pa]
    if len(vis_sink_inds) == 0:
        return []
    vis_sink_inds = torch.cat(vis_sink_inds, dim=0)
    image_attn = attn[:, :, :, im : im + pa]
    portion = torch.sum(image_attn[:, :, :, vis_sink_inds - im], dim=-1) / torch.sum(
        image_attn + 1e-6, dim=-1
    )
    summation = torch.sum(image_attn, dim=-1)
    return torch.nonzero((portion <= rho) & (summation >= summ))


def attn_redist(attention_map, coord, indices, im: int, pa: int, p: float, prefill: bool):
    """attention_map [bsz, H, Q, K] edited in place (and returned) as VARProcessor does."""
    if len(coord) == 0:
        return attention_map
    for h in range(attention_map.shape[1]):
        query_coord = coord[coord[:, 1] == h][:, 2]
        if prefill:
            query_coord = query_coord[im + pa <= query_coord]
        bsz_coord = coord[coord[:, 1] == h][:, 0][: len(query_coord)]
        head_coord = coord[coord[:, 1] == h][:, 1][: len(query_coord)]
        if not query_coord.shape[0] or not head_coord.shape[0]:
            continue
        selected = attention_map[bsz_coord, head_coord, query_coord, :].clone()
        vis_indices = indices[(im <= indices) & (indices < im + pa)]
        text_indices = indices[~torch.isin(indices, vis_indices)]
        copied = selected.detach().clone()
        selected[:, text_indices] *= p
        selected[:, vis_indices] *= p
        budget_vis = copied[:, vis_indices].sum(dim=1) * (1 - p)
        budget_text = copied[:, text_indices].sum(dim=1) * (1 - p)
        copied[:, vis_indices] *= 0
        ratios = copied[:, im : im + pa] / copied[:, im : im + pa].sum(dim=1, keepdim=True)
        selected[:, im : im + pa] += (budget_vis + budget_text).view(-1, 1) * ratios
        attention_map[bsz_coord, head_coord, query_coord, :] = selected
    return attention_map
