"""The study's reference facts: its published tables 2.1 and 5.1, the learning rate and epochs they are at,
what counts as diverged, and the layer its gradient experiment watches."""

REFERENCE_LEARNING_RATE = 0.001  # the study's table 2.1 and section VI are at this learning rate
DIVERGED_BELOW = 0.2  # a run at chance level (about 0.1 on ten classes) has diverged
STUDY_TABLE_2_1 = {"dnn": 0.959, "convnet": 0.987, "resnet": 0.991}
STUDY_TABLE_5_1 = {
    "dnn": {0.1: 0.114, 0.01: 0.932, 0.001: 0.962, 0.0001: 0.935},
    "convnet": {0.1: 0.114, 0.01: 0.978, 0.001: 0.991, 0.0001: 0.988},
    "resnet": {0.1: 0.098, 0.01: 0.958, 0.001: 0.99, 0.0001: 0.99},
}
STUDY_EPOCHS = 10  # the study's tables 2.1 and 5.1 are after this many epochs
TARGET_LAYER = "target_layer"  # the layer the gradient experiment watches
