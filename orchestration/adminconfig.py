from django.contrib.admin.apps import AdminConfig


class OperatorsAdminConfig(AdminConfig):
    """django.contrib.admin, with the operators' site (orchestration.adminsite) as the default."""

    default_site = "orchestration.adminsite.OperatorsAdminSite"
