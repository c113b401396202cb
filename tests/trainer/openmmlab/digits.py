# Our digits model and data, for the children of OpenMMLab's runtime and schedule files.
model = dict(type="DigitsMLP", hidden=32, num_classes=10)
train_dataloader = dict(batch_size=64, num_workers=0, sampler=dict(type="DefaultSampler", shuffle=True),
                        dataset=dict(type="DigitsDataset", split="train"))
val_dataloader = dict(batch_size=128, num_workers=0, sampler=dict(type="DefaultSampler", shuffle=False),
                      dataset=dict(type="DigitsDataset", split="val"))
test_dataloader = val_dataloader
val_evaluator = dict(type="Accuracy", topk=(1,))
test_evaluator = val_evaluator
