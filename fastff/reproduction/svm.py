"""The RBF SVM baseline of a reproduction (the paper's §2.1 comparison on a finite Shapeset
set), fitted once and kept in ``OUT/svm.json``."""
import json

from .. import data as fastff_data
from ..files import atomic_write_bytes


def svm_baseline(out, budget, seed=0, progress=True, fit=True):
    """The RBF SVM baseline on the budget's finite Shapeset set, kept in ``OUT/svm.json`` (run
    again with the same arguments, it is read back, not refitted; without ``fit``, None when
    there is nothing to read back)."""
    from ..baselines import rbf_svm
    path = out / "svm.json"
    args = dict(finite=budget.finite, valid_size=budget.shapeset_sizes[0],
                test_size=budget.shapeset_sizes[1], seed=seed, generator=budget.generator,
                **budget.svm)
    args = json.loads(json.dumps(args))  # tuples as lists, as they come back from the file
    if path.is_file():
        try:
            old = json.loads(path.read_text())
            if old.get("args") == args:
                return old["result"]
        except (OSError, ValueError, AttributeError):
            pass
    if not fit:
        return None
    if progress:
        print(f"RBF SVM baseline on {budget.finite:,} Shapeset examples ({budget.svm['method']})",
              flush=True)
    data = fastff_data.load("shapeset", seed=seed, finite=budget.finite,
                            valid_size=budget.shapeset_sizes[0], test_size=budget.shapeset_sizes[1],
                            generator=budget.generator)
    result = rbf_svm(data.finite.train, data.valid, data.test, seed=seed, progress=progress,
                     **budget.svm).to_dict()
    atomic_write_bytes(path, json.dumps({"args": args, "result": result}, indent=1).encode())
    return result
