"""Understanding what a classifier learned (§12): attribution, its faithfulness, adversarial and fooling
images, class-model visualisation and the penultimate layer's features.

    from components.explain import attribution, adversarial, embedding, parts
    heat = attribution.importance(attribution.integrated_gradients(model, x, y), "integrated_gradients")

Plain PyTorch / NumPy / scikit-learn; pipelines.flows.explain runs the parts on Ray and logs them to MLflow.
"""
