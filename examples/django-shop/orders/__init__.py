"""Orders: the model, the views that take them and the task that processes them."""
