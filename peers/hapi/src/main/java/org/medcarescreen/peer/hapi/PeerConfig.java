package org.medcarescreen.peer.hapi;

import ca.uhn.fhir.batch2.jobs.config.Batch2JobsConfig;
import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.context.support.IValidationSupport;
import ca.uhn.fhir.jpa.api.IDaoRegistry;
import ca.uhn.fhir.jpa.api.config.JpaStorageSettings;
import ca.uhn.fhir.jpa.api.config.ThreadPoolFactoryConfig;
import ca.uhn.fhir.jpa.api.dao.IFhirSystemDao;
import ca.uhn.fhir.jpa.batch2.JpaBatch2Config;
import ca.uhn.fhir.jpa.binary.api.IBinaryStorageSvc;
import ca.uhn.fhir.jpa.binstore.MemoryBinaryStorageSvcImpl;
import ca.uhn.fhir.jpa.config.HapiJpaConfig;
import ca.uhn.fhir.jpa.config.r4.JpaR4Config;
import ca.uhn.fhir.jpa.config.util.HapiEntityManagerFactoryUtil;
import ca.uhn.fhir.jpa.model.config.PartitionSettings;
import ca.uhn.fhir.jpa.model.config.SubscriptionSettings;
import ca.uhn.fhir.jpa.model.dialect.HapiFhirH2Dialect;
import ca.uhn.fhir.jpa.provider.DaoRegistryResourceSupportedSvc;
import ca.uhn.fhir.jpa.provider.JpaCapabilityStatementProvider;
import ca.uhn.fhir.jpa.provider.JpaSystemProvider;
import ca.uhn.fhir.jpa.search.DatabaseBackedPagingProvider;
import ca.uhn.fhir.jpa.subscription.channel.config.SubscriptionChannelConfig;
import ca.uhn.fhir.jpa.subscription.match.config.SubscriptionProcessorConfig;
import ca.uhn.fhir.jpa.subscription.match.deliver.email.IEmailSender;
import ca.uhn.fhir.jpa.subscription.submit.config.SubscriptionSubmitterConfig;
import ca.uhn.fhir.rest.api.IResourceSupportedSvc;
import ca.uhn.fhir.rest.server.RestfulServer;
import ca.uhn.fhir.rest.server.interceptor.RequestValidatingInterceptor;
import ca.uhn.fhir.rest.server.provider.ResourceProviderFactory;
import ca.uhn.fhir.rest.server.util.ISearchParamRegistry;
import ca.uhn.fhir.validation.IInstanceValidatorModule;
import ca.uhn.fhir.validation.ResultSeverityEnum;
import jakarta.persistence.EntityManagerFactory;
import org.apache.commons.dbcp2.BasicDataSource;
import org.hl7.fhir.common.hapi.validation.validator.FhirInstanceValidator;
import org.hl7.fhir.dstu2.model.Subscription; // HAPI keys its channel types by the DSTU2 enum, for every FHIR version
import org.springframework.beans.factory.annotation.Qualifier;
import org.springframework.beans.factory.config.ConfigurableListableBeanFactory;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.context.annotation.Import;
import org.springframework.context.annotation.Primary;
import org.springframework.orm.jpa.JpaTransactionManager;
import org.springframework.orm.jpa.LocalContainerEntityManagerFactoryBean;

import javax.sql.DataSource;
import java.util.Properties;

/**
 * Spring wiring for the peer. HAPI ships the JPA server as Spring {@code @Configuration}
 * classes; what it leaves to the application is the database (DataSource, entity manager
 * factory, transaction manager), the storage settings, and the servlet with its providers.
 * The shape follows HAPI's own test configuration (TestR4Config) and the jpaserver-starter,
 * reduced to what an R4 test peer needs.
 */
@Configuration
@Import({
	JpaR4Config.class, // R4 FhirContext, the generated DAOs and resource providers, JpaConfig
	HapiJpaConfig.class, // paging provider, stale-search cleanup, fulltext service (a no-op here)
	JpaBatch2Config.class, // batch2 job store: JPA services ($reindex etc.) depend on it
	Batch2JobsConfig.class,
	SubscriptionChannelConfig.class, // in-memory message broker: batch2's work queue, subscription delivery
	SubscriptionSubmitterConfig.class, // on every write: queue the change for matching; validate Subscriptions
	SubscriptionProcessorConfig.class, // match changes against active Subscriptions, deliver rest-hooks
	ThreadPoolFactoryConfig.class // thread pools for parallel batch-bundle GETs
})
public class PeerConfig {

	/** Page sizes of the public HAPI servers and the starter: 20 by default, at most 200. */
	static final int DEFAULT_PAGE_SIZE = 20;

	static final int MAX_PAGE_SIZE = 200;

	/** How often changes are handed to the Subscription matcher (HAPI's default: 5,000). */
	static final long SUBSCRIPTION_INTERVAL_MS = 500;

	@Bean
	public JpaStorageSettings storageSettings() {
		JpaStorageSettings s = new JpaStorageSettings();
		// PUT Patient/fx-1 creates the resource with that id. ALPHANUMERIC (HAPI's default,
		// what public sandboxes run) allows any id that is not purely numeric; server-assigned
		// ids stay sequential numbers.
		s.setResourceClientIdStrategy(JpaStorageSettings.ClientIdStrategyEnum.ALPHANUMERIC);
		// HAPI's defaults, stated so that nobody has to look them up:
		s.setAllowExternalReferences(false); // absolute references to other servers are rejected
		s.setEnforceReferentialIntegrityOnWrite(true); // Patient/missing in a reference -> error
		s.setAutoCreatePlaceholderReferenceTargets(false);
		s.setReuseCachedSearchResultsForMillis(JpaStorageSettings.DEFAULT_REUSE_CACHED_SEARCH_RESULTS_FOR_MILLIS);
		return s;
	}

	@Bean
	public PartitionSettings partitionSettings() {
		return new PartitionSettings(); // partitioning off
	}

	/**
	 * R4 rest-hook Subscriptions, matched in memory and delivered from this process (the
	 * starter's {@code hapi.fhir.subscription.resthook_enabled}). Only rest-hook: the service
	 * under test receives notifications over HTTP; e-mail, websocket and message channels are
	 * not needed and stay off.
	 */
	@Bean
	public SubscriptionSettings subscriptionSettings() {
		SubscriptionSettings s = new SubscriptionSettings();
		s.addSupportedSubscriptionType(Subscription.SubscriptionChannelType.RESTHOOK);
		// HAPI persists every change and a scheduled job hands the backlog to the matcher every
		// SUBSCRIPTION_INTERVAL_MS (HAPI's default 5 s puts 0-5 s into every delivery; 5000
		// behaves like a stock server). Subscription resources themselves are queued at once,
		// so a new Subscription is active within about a second.
		s.setSubscriptionIntervalInMs(Long.getLong("hapi.peer.subscriptionIntervalMs", SUBSCRIPTION_INTERVAL_MS));
		s.setSubscriptionChangeQueuedImmediately(true);
		return s;
	}

	/** The delivery listener factory wants a mail sender; e-mail channels are not enabled. */
	@Bean
	public IEmailSender emailSender() {
		return details -> {
			throw new UnsupportedOperationException("e-mail subscriptions are not enabled on this peer");
		};
	}

	/**
	 * Private in-memory H2 database. DB_CLOSE_DELAY=-1 keeps it alive between connections;
	 * the name carries the JVM's pid so two peers never share one.
	 */
	@Bean(destroyMethod = "close")
	public DataSource dataSource() {
		BasicDataSource ds = new BasicDataSource();
		ds.setDriver(new org.h2.Driver());
		ds.setUrl("jdbc:h2:mem:hapi" + ProcessHandle.current().pid() + ";DB_CLOSE_DELAY=-1");
		ds.setUsername("sa");
		ds.setPassword("");
		ds.setMaxTotal(10);
		return ds;
	}

	@Bean
	@Primary
	public LocalContainerEntityManagerFactoryBean entityManagerFactory(
			ConfigurableListableBeanFactory beanFactory,
			FhirContext fhirContext,
			JpaStorageSettings storageSettings,
			DataSource dataSource) {
		// HAPI's helper registers its entity packages and its Hibernate integrations
		LocalContainerEntityManagerFactoryBean emf =
				HapiEntityManagerFactoryUtil.newEntityManagerFactory(beanFactory, fhirContext, storageSettings);
		emf.setPersistenceUnitName("HAPI_PU");
		emf.setDataSource(dataSource);
		Properties p = new Properties();
		p.put("hibernate.dialect", HapiFhirH2Dialect.class.getName());
		p.put("hibernate.hbm2ddl.auto", "update"); // build the schema from the entities at start
		p.put("hibernate.format_sql", "false");
		p.put("hibernate.show_sql", "false");
		// Hibernate Search (Lucene fulltext, _content/_text) is off, as in the starter's default:
		// it costs start time and memory and ordinary searches do not use it.
		p.put("hibernate.search.enabled", "false");
		emf.setJpaProperties(p);
		return emf;
	}

	@Bean
	@Primary
	public JpaTransactionManager transactionManager(EntityManagerFactory emf) {
		return new JpaTransactionManager(emf);
	}

	/** The CapabilityStatement and ResourceProviderFactory list every type that has a DAO. */
	@Bean
	public IResourceSupportedSvc resourceSupportedSvc(IDaoRegistry daoRegistry) {
		return new DaoRegistryResourceSupportedSvc(daoRegistry);
	}

	/** Binary content stays in memory; nothing here needs it on disk. */
	@Bean
	public IBinaryStorageSvc binaryStorageSvc() {
		return new MemoryBinaryStorageSvcImpl();
	}

	/**
	 * Validation of every write (create, update, transaction and batch Bundles) against the R4
	 * core definitions. The validator module is HAPI's JPA one ("myInstanceValidator"), whose
	 * support chain is DefaultProfileValidationSupport + the stored conformance resources +
	 * the database terminology + InMemoryTerminologyServerValidationSupport +
	 * CommonCodeSystemsTerminologyService + snapshot generation.
	 */
	@Bean
	public RequestValidatingInterceptor requestValidatingInterceptor(
			@Qualifier("myInstanceValidator") IInstanceValidatorModule validatorModule) {
		FhirInstanceValidator validator = (FhirInstanceValidator) validatorModule;
		// Extensions whose StructureDefinition the server does not hold (our own
		// https://medcare-screen.org/fhir/StructureDefinition/... ones) are reported as
		// information, not errors.
		validator.setAnyExtensionsAllowed(true);
		// A profile named in meta.profile that the server does not know is not an error either.
		validator.setErrorForUnknownProfiles(false);

		RequestValidatingInterceptor interceptor = new RequestValidatingInterceptor();
		interceptor.addValidatorModule(validator);
		interceptor.setFailOnSeverity(ResultSeverityEnum.ERROR); // ERROR/FATAL -> HTTP 422
		interceptor.setAddResponseHeaderOnSeverity(null); // no X-FHIR-Request-Validation header noise
		return interceptor;
	}

	@Bean
	public RestfulServer restfulServer(
			IFhirSystemDao<?, ?> systemDao,
			ResourceProviderFactory resourceProviders,
			JpaSystemProvider<?, ?> systemProvider,
			JpaStorageSettings storageSettings,
			ISearchParamRegistry searchParamRegistry,
			IValidationSupport validationSupport,
			DatabaseBackedPagingProvider pagingProvider,
			RequestValidatingInterceptor requestValidatingInterceptor) {
		RestfulServer server = new RestfulServer(systemDao.getContext());
		// one provider per resource type (Patient, Observation, ...), backed by the DAOs
		server.registerProviders(resourceProviders.createProviders());
		// the system level: batch/transaction Bundles, /_history, $meta, ...
		server.registerProvider(systemProvider);
		// /metadata built from what is registered and the search parameters in the registry
		// (HAPI's JPA provider; ours only adds the "batch" interaction, see the class)
		JpaCapabilityStatementProvider capabilities = new PeerCapabilityStatementProvider(
				server, systemDao, storageSettings, searchParamRegistry, validationSupport);
		capabilities.setImplementationDescription("MEDCARE Screen HAPI FHIR test peer");
		server.setServerConformanceProvider(capabilities);

		pagingProvider.setDefaultPageSize(DEFAULT_PAGE_SIZE);
		pagingProvider.setMaximumPageSize(MAX_PAGE_SIZE);
		server.setPagingProvider(pagingProvider); // next links: ?_getpages=<uuid>&_getpagesoffset=

		server.setDefaultResponseEncoding(ca.uhn.fhir.rest.api.EncodingEnum.JSON);
		server.setDefaultPrettyPrint(true); // as the starter and the public sandboxes do
		server.registerInterceptor(requestValidatingInterceptor);
		return server;
	}
}
