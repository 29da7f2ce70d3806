"""An example of a jobd job type packaged on its own.  Naming the package in jobd's
`handlers.modules` imports it, which registers `post_webhook`."""

from jobd_webhook.webhook import post_webhook

__all__ = ["post_webhook"]
