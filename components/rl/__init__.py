"""RL building blocks (§14): encoders, the REINFORCE-with-baseline loss and algorithm, policy export.

``losses`` and ``encoders`` are plain PyTorch; ``modules`` and ``reinforce`` plug them into RLlib's
new API stack (RLModule, Learner, Algorithm); ``policy`` turns a trained RLModule into a frozen
greedy policy (a ``torch.export`` program) for evaluation, rendering and serving; ``envs`` builds
Gymnasium environments (Atari frames preprocessed the DQN-paper way).
"""
