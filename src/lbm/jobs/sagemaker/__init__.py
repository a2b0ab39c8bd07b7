"""SageMaker training jobs through AWS Batch service job queues."""
