"""Costs the tests compare: a compact model's multiply-adds against a reference's."""

import tfsparse


def flops_fraction(small, reference):
    """Multiply-adds `small` keeps, as a fraction of `reference`'s dense total
    (both counted by `tfsparse.summary`)."""
    kept = tfsparse.summary(small, print_fn=None)["total"]["flops_kept"]
    return kept / tfsparse.summary(reference, print_fn=None)["total"]["flops_total"]
