"""HTML routes of the classifier app (included at "/" by webapp/urls.py)."""

from django.urls import path

from classifier import live_views, views
from classifier.evaluation import views as evaluation_views

app_name = "classifier"

urlpatterns = [
    path("", views.home, name="home"),
    path("favicon.ico", views.favicon, name="favicon"),
    path("accounts/signup/", views.signup, name="signup"),
    path("demo/", views.demo, name="demo"),
    path("model/", views.about_model, name="model"),
    path("model/figures/<str:name>", views.model_figure, name="model-figure"),
    path("upload/", views.upload, name="upload"),
    path("live/", live_views.camera, name="live"),
    path("classifications/", views.history, name="history"),
    path("classifications/delete/", views.bulk_delete, name="bulk_delete"),
    path("classifications/events", live_views.job_events, name="job-events"),
    path("classifications/<uuid:id>/", views.result, name="result"),
    path("classifications/<uuid:id>/delete/", views.delete, name="delete"),
    path("classifications/<uuid:id>/feedback/", evaluation_views.feedback, name="feedback"),
    # Owner-only (or staff) file views; uploads are never served from a public /media/ URL.
    path("classifications/<uuid:id>/image", views.image, name="image"),
    path("classifications/<uuid:id>/thumbnail", views.thumbnail, name="thumbnail"),
]
