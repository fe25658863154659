"""Test probe for tests/test_train_ddp.py, run in each process of a distributed run.

``python -m torch.distributed.run ... tests/ddp_probe.py ARGS`` (or ``launch(..., module="ddp_probe")``)
is ``edgecnn ARGS`` plus, for the test's evidence: every rank saves its final model and evaluated
(EMA) weights to ``$PROBE_DIR/rankR-{model,eval}.safetensors`` and its metrics (one row per epoch)
to ``$PROBE_DIR/rankR-history.json``; rank ``$PROBE_KILL`` SIGKILLs itself
before its third step (as the out-of-memory killer would); rank ``$PROBE_FAIL`` raises an edgecnn
error there instead (as a bad image would).
"""

import json
import os
import signal
import sys

from safetensors.torch import save_file

from edgecnn.cli import main
from edgecnn.errors import EdgeCNNError
from edgecnn.train import trainer

finish, step = trainer._Run._finish, trainer._Run._step


def dump_then_finish(self):  # noqa: ANN001, ANN201
    prefix = os.path.join(os.environ["PROBE_DIR"], f"rank{self.dist.rank}")
    for name, module in (("model", self.model), ("eval", self.eval_model)):
        state = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
        save_file(state, f"{prefix}-{name}.safetensors")
    with open(f"{prefix}-history.json", "w") as f:
        json.dump(self.history, f)
    return finish(self)


def step_or_fail(self, x, y):  # noqa: ANN001, ANN201
    rank = str(self.dist.rank)
    if self.step_in_epoch == 2 and rank == os.environ.get("PROBE_KILL"):
        os.kill(os.getpid(), signal.SIGKILL)
    if self.step_in_epoch == 2 and rank == os.environ.get("PROBE_FAIL"):
        raise EdgeCNNError("probe: image 17 cannot be read")
    return step(self, x, y)


trainer._Run._finish, trainer._Run._step = dump_then_finish, step_or_fail
if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
