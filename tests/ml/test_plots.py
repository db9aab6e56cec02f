import numpy as np
from PIL import Image

from ml import metrics, plots


def image_size(path):
    with Image.open(path) as im:
        im.verify()  # a real, complete PNG
    with Image.open(path) as im:
        return im.size


def test_confusion_matrix_10_and_100_classes(tmp_path):
    rng = np.random.default_rng(0)
    for c in (10, 100):
        labels = rng.integers(0, c, size=2000)
        preds = np.where(rng.random(2000) < 0.7, labels, rng.integers(0, c, size=2000))
        cm = metrics.confusion_matrix(preds, labels, c)
        path = plots.confusion_matrix(cm, [f"class_{i}" for i in range(c)], tmp_path / f"cm{c}.png")
        width, height = image_size(path)
        assert width >= 700 and height >= 700
    # the 100-class figure is drawn bigger so its 100 tick labels stay legible
    assert image_size(tmp_path / "cm100.png")[0] > image_size(tmp_path / "cm10.png")[0]


def test_reliability_diagram(tmp_path):
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(10) * 0.3, size=500)
    labels = rng.integers(0, 10, size=500)
    path = plots.reliability(metrics.calibration(probs, labels), tmp_path / "rel.png")
    assert image_size(path)[1] > 500


def test_misclassified_grid_shows_at_most_36_and_handles_none(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(50, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 3, size=50)
    probs = rng.dirichlet(np.ones(3), size=50)
    grid = plots.misclassified(images, labels, probs, ["a", "b", "c"], tmp_path / "mis.png")
    assert image_size(grid)[0] > 600
    perfect = np.eye(3)[labels]
    plots.misclassified(images, labels, perfect, ["a", "b", "c"], tmp_path / "none.png")
    assert (tmp_path / "none.png").stat().st_size > 0


def test_training_curves_reads_metrics_csv_with_missing_validation(tmp_path):
    csv_path = tmp_path / "metrics.csv"
    csv_path.write_text(
        "epoch,lr,train_loss,train_acc,val_loss,val_acc,epoch_s,images_per_s\n"
        "1,0.1,2.0,0.3,1.8,0.35,10,100\n"
        "2,0.05,1.5,0.5,nan,nan,10,100\n"
        "3,0.0,1.2,0.6,1.1,0.62,10,100\n"
    )
    cols = plots.read_metrics_csv(csv_path)
    assert cols["val_acc"][2] == 0.62 and np.isnan(cols["val_acc"][1])
    path = plots.training_curves([("run", csv_path)], tmp_path / "curves.png")
    assert image_size(path)[0] > 1000
