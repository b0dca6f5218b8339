"""Readable names for the keys of ``eval.json``, ``summary.json`` and ``metrics.jsonl``.

The report shows these names, never the raw keys (which stay in the files and, on the page, in a
cell's tooltip). Units are part of the name: NLLs are in nats, bits/dim in bits.

>>> label("test_nll"), label("val_nll"), label("anomaly_noise_auroc")
('test NLL (nats)', 'validation NLL (nats)', 'anomaly AUROC: noise')
"""

from __future__ import annotations

__all__ = ["LABELS", "is_clock", "label"]

#: key -> the name the report shows
LABELS: dict[str, str] = {
    # likelihood
    "likelihood": "likelihood figure",
    "nll": "NLL (nats)",
    "bpd": "bits/dim",
    "train_nll": "training NLL (nats)",
    "train_bpd": "training bits/dim",
    "val_nll": "validation NLL (nats)",
    "val_bpd": "validation bits/dim",
    "best_val_nll": "best validation NLL (nats)",
    "test_nll": "test NLL (nats)",
    "test_bpd": "test bits/dim",
    "kl": "KL(true ‖ model) (nats)",
    "reverse_kl": "KL(model ‖ true) (nats)",
    "tv": "total variation",
    "grid_integral": "model density's integral over the grid",
    "ais_log_z": "AIS log Z",
    "ais_log_z_stderr": "AIS log Z standard error",
    "ais_ess": "AIS effective sample size",
    "ais_chains": "AIS chains",
    "ais_temps": "AIS temperatures",
    "ais_warning": "AIS warning",
    # two-sample tests
    "c2st_accuracy": "C2ST accuracy (0.5 is best)",
    "c2st_p_value": "C2ST p-value",
    "c2st_space": "C2ST space",
    "mmd2": "MMD²",
    "mmd_p_value": "MMD p-value",
    # feature space
    "fid": "FID*",
    "kid": "KID*",
    "kid_std": "KID* std",
    "precision": "precision",
    "recall": "recall",
    "features": "feature network",
    "fid_space": "FID space",
    # conditional models (dgm.eval.conditional)
    "cond_accuracy": "conditional accuracy (feature classifier; estimate)",
    "cond_accuracy_stderr": "conditional accuracy standard error",
    "cond_samples_per_class": "conditional: samples per class",
    "cond_accuracy_per_class": "conditional accuracy of each class",
    "cond_fid_per_class": "FID* of each class",
    "cond_fid_class_mean": "per-class FID*, mean over classes",
    "cond_fid": "conditional FID*, all classes",
    "cond_model_test_accuracy": "the model as a classifier, p(y | x): test accuracy",
    "cond_model_test_accuracy_stderr": "the model's test accuracy, standard error",
    "guidance_curve": "accuracy and FID* over guidance weights",
    "temperature_curve": "accuracy and FID* over sampling temperatures",
    "sample_options": "sampling options of the sample-based metrics",
    # modes
    "modes_captured": "modes captured",
    "modes_total": "modes in the data",
    "modes_high_quality": "high-quality samples (fraction)",
    "modes_kl": "KL over modes (nats)",
    # training
    "steps": "training steps",
    "train_seconds": "training time (s)",
    "parameters": "parameters",
    # the curves of metrics.jsonl
    "loss": "training loss",
    "elbo": "ELBO (nats)",
    "recon": "reconstruction term (nats)",
    "d_loss": "discriminator loss",
    "g_loss": "generator loss",
    "d_real": "critic on data",
    "d_fake": "critic on samples",
    "r1": "R1 penalty",
    "energy_data": "energy of data",
    "energy_negative": "energy of negative samples",
    "energy_sq": "squared-energy penalty",
    "d_accuracy": "discriminator accuracy",
    "d_auc": "discriminator AUC",
}

_PREFIXES = (("val_", "validation "), ("train_", "training "), ("test_", "test "))

#: keys of a metrics record that are a clock or a rate, never a quantity to plot as a curve
_CLOCKS = {"step", "epoch", "lr", "seconds", "time", "elapsed", "steps_per_s", "steps_per_second"}


def is_clock(key: str) -> bool:
    """True for bookkeeping keys of a metrics record: the step, the learning rate, elapsed time
    (``seconds``, ``train_seconds``, ``time``, ``*_time``, ...) and throughput.

    >>> [is_clock(k) for k in ("train_seconds", "time", "loss", "val_nll", "steps_per_s")]
    [True, True, False, False, True]
    """
    k = key.lower()
    return (
        k in _CLOCKS
        or k.endswith(("_seconds", "_time", "_elapsed", "_per_s", "_per_second"))
        or k.startswith(("seconds_", "time_", "elapsed_"))
    )


def label(key: str) -> str:
    """The readable name of ``key``: from :data:`LABELS`, else built from its parts
    (``val_X`` -> ``validation`` + the name of ``X``, ``anomaly_X_auroc``), else the key with
    spaces for underscores."""
    if key in LABELS:
        return LABELS[key]
    if key.startswith("anomaly_") and key.endswith(("_auroc", "_auprc")):
        what = key[len("anomaly_") : -len("_auroc")].replace("_", " ")
        return f"anomaly {key[-5:].upper()}: {what}"
    if key == "anomaly_n":
        return "anomaly test size"
    for prefix, word in _PREFIXES:
        if key.startswith(prefix) and key[len(prefix) :] in LABELS:
            return word + LABELS[key[len(prefix) :]]
    return key.replace("_", " ")
