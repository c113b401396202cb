model = dict(type="DigitsSimCLR", width=16, projection_dim=32, temperature=0.2)
