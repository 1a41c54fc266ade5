"""The chunk's three matrix products at the inputs' precision: the logits
$Z_c = X W_c^\\top + b_c$, the weight gradient $G_c^\\top X$ and the features' gradient
$G_c W_c$, every other step (the loss, the per-logit gradient $G_c$, the features' gradient
across chunks) in the compute dtype.

**When the products run in half precision.** Features and weight both bfloat16, or both
float16, or either under `torch.autocast` (its dtype; float64 inputs stay float64), on hardware
with a half-precision matrix path: a CUDA GPU (bfloat16 from compute capability 8.0), a CPU with
AVX512-BF16 or AMX (bfloat16) or AMX-FP16 / AVX512-FP16 (float16). Elsewhere -- a CPU with
AVX2 only, say, where oneDNN emulates bfloat16 products several times slower than float32 ones --
the half-precision values are multiplied as float32 (exact products, float32 sums), as before.
[`HALF_PRODUCTS`][frlr.torch.linear.products.HALF_PRODUCTS] overrides the choice.

**The logits' precision.** Where the backend has a matrix product with a float32 output for half
operands (`torch.mm(..., out_dtype=torch.float32)`: CUDA, torch >= 2.8) the logits come out in
float32 (exact products, float32 sums); elsewhere (the CPU) they come out rounded to the input
dtype (float32 sums inside oneDNN, one rounding at the end) and are widened for the loss. A loss
whose selection must not see half-precision ties (HS-LR) asks for float32 logits
(``float32_logits``): without a float32-output product its logits are multiplied as float32.

**The gradients.** $G_c$ is computed in float32 and cast to the operands' dtype only for the two
gradient products, as the fused cross-entropy kernels do; the weight gradient is written in the
weight's dtype, the features' gradient accumulated in float32 across chunks. float16's range
ends at 65504 and its normal numbers at 6e-5: a chunk's $G_c$ (entries of order
$\\beta / (N K)$) is multiplied by a power of two before the cast, chosen so that neither it nor
the products overflow, and the products are divided by it in float32."""

from __future__ import annotations

import functools
import os

import torch
from torch import Tensor

HALF = (torch.float16, torch.bfloat16)

HALF_PRODUCTS: bool | None = {"1": True, "0": False}.get(os.environ.get("FRLR_HALF_PRODUCTS", ""))
"""Whether half-precision inputs multiply in their own dtype: None (the default) decides by the
hardware, as the module docstring says; True or False decides for every device (tests, and
benchmarks that measure the half-precision path where it is emulated). The environment variable
``FRLR_HALF_PRODUCTS`` (1 or 0) sets it at import."""

_FP16_REACH = 2.0**14
"""The largest magnitude float16 operands and products of a chunk are scaled to (4x below the
largest float16, 65504)."""


def native_half(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether ``device`` multiplies ``dtype`` matrices on a half-precision path of its own
    (see the module docstring); [`HALF_PRODUCTS`][frlr.torch.linear.products.HALF_PRODUCTS]
    overrides."""
    if HALF_PRODUCTS is not None:
        return HALF_PRODUCTS
    if device.type == "cuda":
        return dtype == torch.float16 or torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        if dtype == torch.bfloat16:
            probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
            return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)
        try:  # AVX512-FP16 or AMX-FP16
            return bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())
        except (AttributeError, RuntimeError):  # a torch without the probe
            return False
    return True  # other accelerators: as autocast would multiply


def product_dtype(features: Tensor, weight: Tensor, compute: torch.dtype) -> torch.dtype:
    """The dtype the chunk's products multiply in: the inputs' half dtype (or autocast's) where
    [`native_half`][frlr.torch.linear.products.native_half], else ``compute``."""
    if compute == torch.float64:
        return compute
    device = features.device
    if torch.is_autocast_enabled(device.type):
        half = torch.get_autocast_dtype(device.type)
    elif features.dtype == weight.dtype:
        half = features.dtype
    else:
        return compute
    return half if half in HALF and native_half(device, half) else compute


@functools.cache
def float32_output(device_type: str, dtype: torch.dtype) -> bool:
    """Whether ``torch.mm(a, b, out_dtype=torch.float32)`` multiplies ``dtype`` matrices on
    this kind of device (probed once with a 2 x 2 product)."""
    if dtype not in HALF:
        return False
    try:
        a = torch.ones(2, 2, dtype=dtype, device=device_type)
        out = torch.mm(a, a, out_dtype=torch.float32)
    except (RuntimeError, NotImplementedError, TypeError):
        return False
    return out.dtype == torch.float32 and bool(out[0, 0] == 2)


class Products:
    """The products of one call: ``x`` the features in the compute dtype, multiplied in
    ``dtype``; the logits' operands in ``logits_dtype`` (``dtype`` unless the loss asks for
    float32 logits that ``dtype`` cannot give, see the module docstring)."""

    def __init__(
        self, x: Tensor, compute: torch.dtype, dtype: torch.dtype, float32_logits: bool
    ) -> None:
        self.compute, self.dtype = compute, dtype
        self.half = dtype in HALF
        self.wide = self.half and float32_output(x.device.type, dtype)
        self.logits_dtype = compute if float32_logits and self.half and not self.wide else dtype
        self.x = x.to(dtype)
        self.x_logits = self.x.to(self.logits_dtype)  # the values of x in ``dtype``
        self._reach_x: Tensor | None = None

    def classifier(self, w: Tensor) -> Tensor:
        """Rows of the weight as the logits' products take them: their values in ``dtype``
        (rounded under autocast), in ``logits_dtype``."""
        if w.dtype != self.dtype and self.logits_dtype != self.dtype:
            w = w.to(self.dtype)
        return w.to(self.logits_dtype)

    def rounding_unit(self, device: torch.device) -> float:
        """The unit roundoff of the logits' sums: the compute dtype's, TF32's where a CUDA
        float32 product may use it; half-precision operands' products are exact in float32."""
        if self.logits_dtype in HALF:
            return torch.finfo(torch.float32).eps / 2
        cuda_float32 = self.compute == torch.float32 and device.type == "cuda"
        if cuda_float32 and torch.backends.cuda.matmul.allow_tf32:
            return 2.0**-11
        return torch.finfo(self.compute).eps / 2

    def logits(self, x: Tensor, w: Tensor, bias: Tensor | None) -> Tensor:
        """$x w^\\top + b$ in the compute dtype, for ``x`` rows of ``x_logits`` and ``w`` in
        ``logits_dtype``; ``bias`` in the compute dtype or None."""
        if w.dtype not in HALF:
            return x @ w.t() if bias is None else torch.addmm(bias, x, w.t())
        if self.wide:
            z = torch.mm(x, w.t(), out_dtype=torch.float32)
            return z if bias is None else z.add_(bias)
        z = x @ w.t()
        return z.to(self.compute) if bias is None else torch.add(z, bias)  # widened by the add

    def gradients(
        self,
        g: Tensor,
        x: Tensor,
        w: Tensor,
        weight: Tensor | None,
        features: Tensor | None,
        accumulate: bool = False,
    ) -> None:
        """``weight`` (a chunk of the weight's gradient, its dtype) = $G^\\top X$ (+= with
        ``accumulate``) and ``features`` (compute dtype) += $G W$, for the per-logit gradient
        ``g`` (compute dtype), ``x`` rows of ``self.x`` and ``w`` the chunk's classifier."""
        if not self.half:
            self._plain(g, x, w, weight, features, accumulate)
            return
        w = w.to(self.dtype)
        scale = self._fp16_scale(g, w) if self.dtype == torch.float16 else None
        gh = (g if scale is None else g * scale).to(self.dtype)
        if weight is not None:
            if scale is None and not accumulate and weight.dtype == self.dtype:
                torch.mm(gh.t(), x, out=weight)
            else:
                weight_part = self._product(gh.t(), x, scale)
                weight.add_(weight_part) if accumulate else weight.copy_(weight_part)
        if features is not None:
            features.add_(self._product(gh, w, scale))

    @staticmethod
    def _plain(g, x, w, weight, features, accumulate) -> None:
        """The compute dtype's products (float32/float64), as before half-precision products."""
        if weight is not None:
            if accumulate:
                weight += (g.t() @ x).to(weight.dtype)
            elif weight.dtype == g.dtype:
                torch.mm(g.t(), x, out=weight)
            else:
                weight.copy_(g.t() @ x)
        if features is not None:
            features.addmm_(g, w.to(g.dtype))

    def _product(self, a: Tensor, b: Tensor, scale: Tensor | None) -> Tensor:
        """a @ b of half operands, float32 where the backend can, divided by ``scale``."""
        out = torch.mm(a, b, out_dtype=torch.float32) if self.wide else a @ b
        return out if scale is None else out.to(self.compute).div_(scale)

    def _fp16_scale(self, g: Tensor, w: Tensor) -> Tensor:
        """A power of two that takes the chunk's largest |G| to at most 2^14 / reach, reach the
        largest column sum of |X| and |W_c| bounding how much a product's entry adds up (1
        where the products come out in float32): a device tensor, so the chunk loop does not
        wait for the device."""
        peak = torch.nan_to_num(g.abs().amax().to(torch.float32), nan=1.0, posinf=1.0)
        limit = torch.full_like(peak, _FP16_REACH)
        if not self.wide:
            if self._reach_x is None:
                self._reach_x = self.x.abs().sum(0, dtype=torch.float32).amax()
            reach_w = w.abs().sum(0, dtype=torch.float32).amax()
            limit = limit / torch.maximum(torch.maximum(self._reach_x, reach_w), limit.new_ones(()))
        ratio = limit / peak.clamp(min=torch.finfo(torch.float32).tiny)
        return torch.exp2(torch.floor(torch.log2(ratio)).clamp(-126, 126))
