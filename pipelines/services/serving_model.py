"""The MLflow "model from code" entry point: logged with each registered vision model, run at load time.

Logging the model as code (not a cloudpickled object) means loading it unpickles nothing; the
weights themselves load with ``torch.load(weights_only=True)``.
"""

from mlflow.models import set_model

from pipelines.services.serving import TaskModel

set_model(TaskModel())
