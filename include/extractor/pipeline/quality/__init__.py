"""Quality: the expectation suite derived from the schema, its validation run (Great
Expectations), the run summary and the alerts that tell people when quality drops."""
