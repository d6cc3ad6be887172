"""What a run trains: the GPT model and its split into stages, the training data, the optimizers.

    from executor.training.model import build_stages, loss_fn     # one nn.Module per stage
    from executor.training.data import load_corpus                # the batches of every step
    from executor.training.optim import make_optimizer            # one optimizer per owned stage

Modules: model (GPT, the layer split of schedules.workload), data (the corpus and its batches), optim/
(optimizers and staleness corrections). Nothing here knows about pipelines or ranks.
"""
