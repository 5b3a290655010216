"""Bidirectional GRU classifier, the MNIST-1D reference recurrent model."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from research.models.layers import Dense, uniform_fan_in


class BiGRU(nn.Module):
  """Bidirectional GRU over the sequence, every step's outputs flattened into a linear classifier.

  The cell is PyTorch's: input and hidden projections each carry a bias, and the candidate state
  uses r * (W_hn h + b_hn). Both directions advance in one scan (the backward one reads the
  sequence reversed), halving the sequential steps. Hidden 6 over 40 steps: 5,134 parameters.
  """
  hidden: int = 6
  num_classes: int = 10
  unroll: int = 1
  dtype: object = None

  @nn.compact
  def __call__(self, x_BxT: jax.Array) -> jax.Array:
    x_BxTxI = x_BxT.reshape(x_BxT.shape[0], x_BxT.shape[1], -1)
    batch, steps, n_in = x_BxTxI.shape
    h = self.hidden
    init = uniform_fan_in(h)  # PyTorch's GRU uses 1/sqrt(hidden) for every tensor
    # Leading axis D=2: forward, backward. Gate order on the 3H axis: reset, update, candidate.
    w_in_DxIx3H = self.param("w_in", init, (2, n_in, 3 * h))
    b_in_Dx3H = self.param("b_in", init, (2, 3 * h))
    w_hid_DxHx3H = self.param("w_hid", init, (2, h, 3 * h))
    b_hid_Dx3H = self.param("b_hid", init, (2, 3 * h))
    x_BxTxI, w_in_DxIx3H, b_in_Dx3H, w_hid_DxHx3H, b_hid_Dx3H = nn.dtypes.promote_dtype(
        x_BxTxI, w_in_DxIx3H, b_in_Dx3H, w_hid_DxHx3H, b_hid_Dx3H, dtype=self.dtype)

    x_TxBxI = jnp.swapaxes(x_BxTxI, 0, 1)
    x_TxDxBxI = jnp.stack([x_TxBxI, x_TxBxI[::-1]], axis=1)
    gates_in_TxDxBx3H = (jnp.einsum("tdbi,dig->tdbg", x_TxDxBxI, w_in_DxIx3H)
                         + b_in_Dx3H[None, :, None, :])

    def cell(h_DxBxH, gates_in_DxBx3H):
      gates_hid = jnp.einsum("dbh,dhg->dbg", h_DxBxH, w_hid_DxHx3H) + b_hid_Dx3H[:, None, :]
      r = jax.nn.sigmoid(gates_in_DxBx3H[..., :h] + gates_hid[..., :h])
      z = jax.nn.sigmoid(gates_in_DxBx3H[..., h:2 * h] + gates_hid[..., h:2 * h])
      n = jnp.tanh(gates_in_DxBx3H[..., 2 * h:] + r * gates_hid[..., 2 * h:])
      h_new = (1.0 - z) * n + z * h_DxBxH
      return h_new, h_new

    h0_DxBxH = jnp.zeros((2, batch, h), gates_in_TxDxBx3H.dtype)
    _, out_TxDxBxH = lax.scan(cell, h0_DxBxH, gates_in_TxDxBx3H, unroll=self.unroll)
    forward_TxBxH = out_TxDxBxH[:, 0]
    backward_TxBxH = out_TxDxBxH[::-1, 1]  # back into sequence order
    out_BxTx2H = jnp.swapaxes(jnp.concatenate([forward_TxBxH, backward_TxBxH], axis=-1), 0, 1)
    return Dense(self.num_classes, dtype=self.dtype)(out_BxTx2H.reshape(batch, -1))
