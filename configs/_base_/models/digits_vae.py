model = dict(type="DigitsVAE", latent_dim=8, hidden=256, kl_weight=1.0, sample_seed=0)
