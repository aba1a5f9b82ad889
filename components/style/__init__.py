"""Neural style transfer, texture synthesis and DeepDream (§12) on Gram matrices of convolutional features.

    from components.style import features, images, synthesis
    net = features.RandomFeatures(filters=64, scales=(1, 2, 4, 8))
    result = synthesis.transfer(net, images.load("chelsea", 256), images.load("brick", 256), steps=150)

Plain PyTorch / NumPy; pipelines.flows.style runs each mode as a Ray task and logs it to MLflow.
"""
