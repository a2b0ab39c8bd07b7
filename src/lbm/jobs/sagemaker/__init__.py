"""SageMaker training jobs through AWS Batch service jobs, and the entry point their container runs."""
