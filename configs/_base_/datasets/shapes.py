# Generated shapes (background, circle, square, triangle) on 48x48 images: made in memory, nothing downloaded.
# Object borders are labelled 255 and ignored, as VOC does.
train_dataloader = dict(
    batch_size=8,
    num_workers=0,
    sampler=dict(shuffle=True),
    dataset=dict(type="ShapesDataset", split="train", num_samples=400, size=48, seed=0),
)
val_dataloader = dict(batch_size=50, num_workers=0,
                      dataset=dict(type="ShapesDataset", split="val", num_samples=100, size=48, seed=0))
test_dataloader = dict(batch_size=50, num_workers=0,
                       dataset=dict(type="ShapesDataset", split="test", num_samples=100, size=48, seed=0))
val_evaluator = dict(type="IoUMetric", num_classes=4, ignore_index=255,
                     class_names=("background", "circle", "square", "triangle"))
test_evaluator = val_evaluator
