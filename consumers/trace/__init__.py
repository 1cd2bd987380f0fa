"""Where is my postback? The journey of one message through the pipeline, read from Kafka.

`journey` judges what happened from the records (pure), `reader` reads bounded ranges of
single partitions, `find` decides which partitions can hold the answer, `render` prints it,
`cli` is the command (`postback-pipeline trace`).
"""
