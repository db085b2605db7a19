"""Meta-training: truncated unrolls, ES/PES gradient estimators, workers, the learner."""
