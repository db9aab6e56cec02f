"""HTML routes of the classifier app (included at "/" by webapp/urls.py)."""

from django.urls import path

from classifier import views

app_name = "classifier"

urlpatterns = [
    path("", views.home, name="home"),
    path("favicon.ico", views.favicon, name="favicon"),
    path("accounts/signup/", views.signup, name="signup"),
    path("upload/", views.upload, name="upload"),
    path("classifications/", views.history, name="history"),
    path("classifications/<uuid:id>/", views.result, name="result"),
    path("classifications/<uuid:id>/delete/", views.delete, name="delete"),
    # Owner-only (or staff) file views; uploads are never served from a public /media/ URL.
    path("classifications/<uuid:id>/image", views.image, name="image"),
    path("classifications/<uuid:id>/thumbnail", views.thumbnail, name="thumbnail"),
]
