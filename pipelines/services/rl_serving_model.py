"""The MLflow "model from code" entry point of a registered RL policy, run at load time.

No cloudpickle: the policy is a ``torch.export`` program (``policy.pt2``), loaded as a graph of tensor
ops. Input: observations (N×obs_dim float32; N×4×84×84 frames for Atari). Output: N greedy actions::

    mlflow models serve -m models:/cartpole-v1-ppo@champion --env-manager local -p 5002
    curl -s localhost:5002/invocations -H 'Content-Type: application/json' \\
         -d '{"inputs": [[0.01, -0.02, 0.03, 0.04]]}'
"""

from mlflow.models import set_model

from pipelines.services.rl_serving import PolicyModel

set_model(PolicyModel())
