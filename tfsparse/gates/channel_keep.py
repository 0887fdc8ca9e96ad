"""A fixed 0/1 mask on a channel group: how a kernel-gate method closes whole
channels.

A kernel gate zeroes a layer's kernel columns, which makes its output channel
0 only where nothing after it adds a constant: a BatchNormalization turns the
zero into β − γμ/σ, and in a residual stream several layers write the same
channel. `sparsify` therefore puts one `ChannelKeepGate` on each channel group
whose producers carry such gates (at unit level, `Gate.group_keep_levels`),
where the unit-gate methods put theirs: before every layer that reads the
group. It multiplies by ones until its family's hardening closes units
(`TargetedDropoutGate.prepare_hardening`); the closed channels are then exactly
0 for every layer that reads the group through its kernel, whatever
BatchNormalization's β does in later training, and `tfsparse.compact` removes
them from every producer and reader.
"""

import keras
from keras import ops

from tfsparse.gates.base import UNIT, Gate


@keras.saving.register_keras_serializable(package="tfsparse")
class ChannelKeepGate(Gate):
    """A unit gate that holds a non-trainable 0/1 `keep` mask (ones when
    built). It learns nothing, draws nothing and its penalty is 0; it belongs
    to no method (it is placed beside a method's kernel gates).

    Args:
        **kwargs: `Gate` arguments (`units`, `name`, ...).
    """

    structure_choices = (UNIT,)

    def build_gate(self, mask_shape):
        self.keep = self.add_weight(
            name="keep", shape=mask_shape, initializer="ones", trainable=False
        )

    def close(self, closed):
        """Sets `keep` to 0 on the units where `closed` (bool, one per unit)
        is true, and the frozen mask too once the gate is hardened (pruning
        again after hardening)."""
        self.keep.assign(ops.where(closed, 0.0, self.keep))
        if float(ops.convert_to_numpy(self.hardened)) > 0:
            self.hard_mask.assign(ops.where(closed, 0.0, self.hard_mask))

    def sample_mask(self, inputs):
        del inputs
        return ops.convert_to_tensor(self.keep)

    def deterministic_mask(self):
        return ops.convert_to_tensor(self.keep)

    def open_probability(self):
        return ops.convert_to_tensor(self.keep)

    def regularization(self):
        return ops.zeros((), dtype="float32")
