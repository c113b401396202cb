# scikit-learn's handwritten digits: ships with the package, so nothing is downloaded.
train_dataloader = dict(
    batch_size=32,
    num_workers=0,
    sampler=dict(shuffle=True),
    dataset=dict(type="DigitsDataset", split="train", pipeline=[dict(type="RandomShift", max_shift=1)]),
)
val_dataloader = dict(batch_size=128, num_workers=0, dataset=dict(type="DigitsDataset", split="val"))
test_dataloader = dict(batch_size=128, num_workers=0, dataset=dict(type="DigitsDataset", split="test"))
val_evaluator = dict(type="Accuracy", topk=(1, 3))
test_evaluator = val_evaluator
