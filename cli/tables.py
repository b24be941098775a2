"""Plain-text tables of library results (the presentation layer: the library returns dataclasses, the CLI prints)."""

from __future__ import annotations

from typing import Any

__all__ = ["paper_claims_table"]


def paper_claims_table(claims: Any) -> str:
    """A small text table of a lsg_graph.model.PaperClaims: sigma on and off the codes, held-out IWAE, the verdict."""
    from lsg_graph.model.evaluate import PAPER_RATIO

    e = claims.extrapolation
    rows = [
        ("", "rbf", "standard"),
        ("mean sigma on codes", f"{e.rbf_sigma_codes:.4g}", f"{e.standard_sigma_codes:.4g}"),
        (f"mean sigma at {e.factor:g}R", f"{e.rbf_sigma_far:.4g}", f"{e.standard_sigma_far:.4g}"),
        ("ratio far / codes", f"{e.rbf_ratio:.4g}", f"{e.standard_ratio:.4g}"),
        (f"held-out log p(x) (IWAE-{claims.n_samples}, nats)", f"{claims.iwae_rbf:.2f}", f"{claims.iwae_standard:.2f}"),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [
        "  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row))
        for row in rows
    ]
    verdict = "holds" if claims.claim_holds else "does NOT hold"
    lines.append(
        f"R = {e.radius:.3g} (latent units), {e.n_points} far points, {claims.n_held_out} held-out samples; "
        f"claim 'rbf sigma at {e.factor:g}R >= {PAPER_RATIO:g}x sigma on codes' {verdict}."
    )
    return "\n".join(lines)
